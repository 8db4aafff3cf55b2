from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.config import load_training_config
from tasks.features import (
    CategoricalFit,
    FeaturePipeline,
    add_aggregates,
    add_derived_columns,
    fit_feature_pipeline,
)
from tasks.generator import generate_transactions

CONFIG = load_training_config(Path(__file__).resolve().parents[2] / "tasks" / "configs" / "card_fraud.yaml")


def _brute_force(frame: pl.DataFrame) -> dict[str, list[float]]:
    """Aggregates by definition, one row at a time: only strictly earlier rows of the same card count."""
    rows = frame.select("card_id", "timestamp", "amount").rows()
    windows = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
    out: dict[str, list[float]] = {name: [] for name in ["hours_since_previous", "amount_to_mean"]}
    for window in windows:
        out[f"count_{window}"] = []
        out[f"amount_sum_{window}"] = []
    for card, t, amount in rows:
        earlier = [(s, a) for c, s, a in rows if c == card and s < t]
        for window, width in windows.items():
            inside = [a for s, a in earlier if s >= t - width]
            out[f"count_{window}"].append(float(len(inside)))
            out[f"amount_sum_{window}"].append(float(sum(inside)))
        if earlier:
            last = max(s for s, _ in earlier)
            out["hours_since_previous"].append((t - last).total_seconds() / 3600)
            mean = sum(a for _, a in earlier) / len(earlier)
            out["amount_to_mean"].append(amount / mean)
        else:
            out["hours_since_previous"].append(720.0)
            out["amount_to_mean"].append(1.0)
    return out


def test_aggregates_match_their_definition_on_shuffled_rows_with_ties() -> None:
    # given a few cards with bursts, exact-time ties and rows in random order
    rng = np.random.default_rng(3)
    n = 400
    start = datetime(2026, 1, 1)
    minutes = np.sort(rng.integers(0, 60 * 24 * 20, n))
    minutes[10:14] = minutes[10]  # simultaneous rows: none may see another
    frame = pl.DataFrame(
        {
            "card_id": rng.choice(["a", "b", "c", "d"], n),
            "timestamp": [start + timedelta(minutes=int(m)) for m in minutes],
            "amount": np.round(rng.lognormal(3, 1, n), 2),
        }
    ).sample(fraction=1.0, shuffle=True, seed=1)
    # when the vectorised job runs
    result = add_aggregates(frame, CONFIG.spec)
    # then every aggregate equals the row-by-row definition, in the input's order
    expected = _brute_force(frame)
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].to_numpy(), values, rtol=1e-12, atol=1e-9, err_msg=name)


def test_a_row_never_sees_itself_or_the_future() -> None:
    # given one card's rows, the last one far in the future
    frame = pl.DataFrame(
        {
            "card_id": ["x", "x", "x"],
            "timestamp": [datetime(2026, 1, 1, 10), datetime(2026, 1, 1, 10, 30), datetime(2026, 3, 1)],
            "amount": [10.0, 20.0, 5000.0],
        }
    )
    # when aggregated
    result = add_aggregates(frame, CONFIG.spec)
    # then the first row has no history and the second sees only the first
    assert result["count_7d"].to_list() == [0.0, 1.0, 0.0]
    assert result["amount_sum_1h"].to_list() == [0.0, 10.0, 0.0]
    assert result["hours_since_previous"].to_list()[:2] == pytest.approx([720.0, 0.5], abs=1e-12)


def _fitted() -> tuple[FeaturePipeline, pl.DataFrame]:
    raw = generate_transactions(20_000, seed=11)
    base = add_aggregates(add_derived_columns(raw, CONFIG.spec), CONFIG.spec)
    return fit_feature_pipeline(base, CONFIG.spec), raw


def test_one_row_with_its_history_gets_the_same_features_as_in_the_whole_frame() -> None:
    # given a fitted pipeline and a frame
    pipeline, raw = _fitted()
    whole = pipeline.transform(raw)
    # when the last row of a busy card is transformed alone, with the rows before it as history
    busiest = raw.group_by("card_id").len().sort("len", descending=True)["card_id"][0]
    position = int(raw.with_row_index().filter(pl.col("card_id") == busiest)["index"][-1])
    alone = pipeline.transform(raw[position : position + 1], history=raw[:position])
    # then the numbers are the same
    np.testing.assert_allclose(alone.to_numpy()[0], whole.to_numpy()[position], rtol=0, atol=1e-9)


def test_unseen_category_is_scored_not_rejected() -> None:
    # given a fitted pipeline
    pipeline, raw = _fitted()
    row = raw[:1].with_columns(pl.lit("submarine_rental").alias("merchant_category"), pl.lit("atm").alias("channel"))
    # when a merchant category never seen in training arrives
    design = pipeline.transform(row)
    # then it lands in the documented bucket: __other__ when training pooled rare levels, else the reference
    fit = pipeline.fits["merchant_category"]
    assert isinstance(fit, CategoricalFit)
    columns = [c for c in design.columns if c.startswith("merchant_category[")]
    values = design.select(columns).row(0)
    if fit.other_column:
        assert dict(zip(columns, values, strict=True))["merchant_category[__other__]"] == 1.0
    else:
        assert sum(values) == 0.0
    assert np.isfinite(design.to_numpy()).all()


def test_reference_level_is_the_most_frequent_and_has_no_column() -> None:
    pipeline, raw = _fitted()
    fit = pipeline.fits["channel"]
    assert isinstance(fit, CategoricalFit)
    most_frequent = raw["channel"].value_counts(sort=True)["channel"][0]
    assert fit.reference == most_frequent
    assert f"channel[{most_frequent}]" not in pipeline.design_columns()


def test_standardisation_uses_training_statistics_only() -> None:
    # given a pipeline fitted on one frame
    pipeline, _ = _fitted()
    # when it transforms a frame with a very different amount distribution
    other = generate_transactions(2_000, seed=5).with_columns(pl.col("amount") * 100)
    amounts = pipeline.transform(other)["amount"]
    # then the transform still uses the training mean and standard deviation (not re-fitted: mean far from 0)
    assert float(amounts.mean()) > 1.0  # type: ignore[arg-type]


def test_pipeline_round_trips_through_json(tmp_path: Path) -> None:
    # given a fitted pipeline
    pipeline, raw = _fitted()
    # when saved and loaded
    pipeline.save(tmp_path / "p.json")
    loaded = FeaturePipeline.load(tmp_path / "p.json")
    # then it transforms identically
    assert loaded == pipeline
    assert loaded.transform(raw[:500]).equals(pipeline.transform(raw[:500]))


def test_aggregates_refuse_a_key_that_would_overflow() -> None:
    # given two rows eight millennia apart on many cards' worth of key space
    frame = pl.DataFrame(
        {
            "card_id": [str(i) for i in range(60_000)],
            "timestamp": [datetime(1000, 1, 1)] * 59_999 + [datetime(9000, 1, 1)],
            "amount": [1.0] * 60_000,
        }
    )
    # when / then
    with pytest.raises(ValueError, match="overflow"):
        add_aggregates(frame, CONFIG.spec)
