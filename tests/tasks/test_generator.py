"""Tests for the seeded synthetic transaction generator (`tasks.generator`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from tasks.generator import (
    CARD_COUNTRIES,
    CHANNELS,
    FRAUD_COEFFICIENTS,
    LARGE_AMOUNT,
    MERCHANT_CATEGORIES,
    NIGHT_HOURS,
    RAW_COLUMNS,
    RISKY_CATEGORIES,
    generate_transactions,
)

ROWS = 100_000


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return generate_transactions(ROWS, seed=11)


def _mean(values: pl.Series) -> float:
    return float(values.cast(pl.Float64).sum()) / values.len()


def _with_flags(frame: pl.DataFrame) -> pl.DataFrame:
    hour = pl.col("timestamp").dt.hour()
    return frame.with_columns(
        cross_border=pl.col("merchant_country") != pl.col("card_country"),
        night=(hour >= NIGHT_HOURS.start) & (hour < NIGHT_HOURS.stop),
    )


def test_schema_is_the_raw_contract(frame: pl.DataFrame) -> None:
    # given
    expected = {
        "transaction_id": pl.String,
        "card_id": pl.String,
        "timestamp": pl.Datetime("us"),
        "amount": pl.Float64,
        "merchant_category": pl.String,
        "merchant_country": pl.String,
        "card_country": pl.String,
        "channel": pl.String,
        "device_seen_before": pl.Boolean,
        "is_fraud": pl.Int8,
    }

    # when
    schema = dict(frame.schema)

    # then
    assert tuple(frame.columns) == RAW_COLUMNS
    assert schema == expected
    assert frame.null_count().sum_horizontal().item() == 0


@pytest.mark.parametrize("rows", [1, 2, 50, 20_000])
def test_row_count_is_exact(rows: int) -> None:
    # given / when
    result = generate_transactions(rows)

    # then
    assert result.height == rows


def test_transaction_ids_are_unique(frame: pl.DataFrame) -> None:
    # when
    ids = frame["transaction_id"]

    # then
    assert ids.n_unique() == ROWS
    assert ids.str.starts_with("tx").all()


def test_timestamps_are_sorted_and_within_the_window() -> None:
    # given
    start = datetime(2025, 6, 3, 13, 47, 5, 250)
    days = 3

    # when
    result = generate_transactions(20_000, seed=5, days=days, start=start)

    # then
    assert result["timestamp"].is_sorted()
    first, last = result["timestamp"].item(0), result["timestamp"].item(-1)
    assert start <= first <= last < start + timedelta(days=days)
    assert result.sort("timestamp", "transaction_id").equals(result)
    assert result["transaction_id"].is_sorted()


def test_timestamps_follow_a_daily_cycle(frame: pl.DataFrame) -> None:
    # when
    per_hour = frame.group_by(pl.col("timestamp").dt.hour().alias("hour")).len()
    count = dict(zip(per_hour["hour"], per_hour["len"], strict=True))

    # then
    assert count[3] * 5 < count[12]
    assert count[3] * 5 < count[19]


def test_amounts_are_positive_cents_below_a_million(frame: pl.DataFrame) -> None:
    # when
    amount = frame["amount"]

    # then
    assert (amount > 0).all()
    assert (amount < 1e6).all()
    assert (((amount * 100).round() - amount * 100).abs() < 1e-6).all()


def test_categorical_columns_use_their_vocabularies(frame: pl.DataFrame) -> None:
    # when
    categories = set(frame["merchant_category"].unique())
    channels = set(frame["channel"].unique())
    card_countries = set(frame["card_country"].unique())
    merchant_countries = set(frame["merchant_country"].unique())

    # then
    assert categories == set(MERCHANT_CATEGORIES)
    assert channels == set(CHANNELS)
    assert card_countries == set(CARD_COUNTRIES)
    assert all(len(c) == 2 and c.isupper() for c in merchant_countries)
    assert frame.filter(pl.col("merchant_category") == "cash")["channel"].eq("atm").all()


def test_about_eight_percent_of_transactions_are_cross_border(
    frame: pl.DataFrame,
) -> None:
    # when
    share = _mean(_with_flags(frame)["cross_border"])

    # then
    assert 0.06 < share < 0.10


def test_card_activity_is_skewed(frame: pl.DataFrame) -> None:
    # given
    per_card = frame.group_by("card_id").len()["len"].sort(descending=True)

    # when
    top_tenth_share = per_card.head(per_card.len() // 10).sum() / ROWS

    # then
    assert ROWS // 60 <= per_card.len() <= ROWS // 40
    assert top_tenth_share > 0.25


def test_fraud_share_is_one_to_two_percent_ish(frame: pl.DataFrame) -> None:
    # when
    share = _mean(frame["is_fraud"])

    # then
    assert set(frame["is_fraud"].unique()) == {0, 1}
    assert 0.005 <= share <= 0.03


def test_same_seed_gives_the_same_frame() -> None:
    # when
    first = generate_transactions(20_000, seed=3)
    second = generate_transactions(20_000, seed=3)

    # then
    assert first.equals(second)


def test_different_seed_gives_different_data() -> None:
    # when
    first = generate_transactions(20_000, seed=3)
    second = generate_transactions(20_000, seed=4)

    # then
    assert not first.equals(second)
    assert not first["amount"].equals(second["amount"])
    assert not first["timestamp"].equals(second["timestamp"])


def test_card_testing_bursts_are_visible_per_card(frame: pl.DataFrame) -> None:
    # given
    fraud = frame.filter(pl.col("is_fraud") == 1).sort("card_id", "timestamp")

    # when: for each fraud row, the time until the same card's second-next fraud row
    spans = fraud.with_columns(span=pl.col("timestamp").shift(-2).over("card_id") - pl.col("timestamp")).filter(
        pl.col("span") <= timedelta(minutes=10)
    )

    # then
    assert spans["card_id"].n_unique() >= 10
    small_online = frame.filter(pl.col("amount") <= 10, pl.col("channel") == "online")
    assert _mean(small_online["is_fraud"]) > 4 * _mean(frame["is_fraud"])


def test_cross_border_night_is_riskier_than_domestic_day(frame: pl.DataFrame) -> None:
    # given
    flagged = _with_flags(frame)

    # when
    risky = _mean(flagged.filter(pl.col("cross_border") & pl.col("night"))["is_fraud"])
    safe = _mean(flagged.filter(~pl.col("cross_border") & ~pl.col("night"))["is_fraud"])

    # then
    assert risky > 3 * safe


def test_labels_match_the_documented_coefficients(frame: pl.DataFrame) -> None:
    # given: rows that cannot be card-testing bursts (those are small online charges)
    c = FRAUD_COEFFICIENTS
    flags = {
        "cross_border": pl.col("cross_border"),
        "night": pl.col("night"),
        "online": pl.col("channel") == "online",
        "new_device": ~pl.col("device_seen_before"),
        "risky_category": pl.col("merchant_category").is_in(RISKY_CATEGORIES),
        "large_foreign_night": pl.col("cross_border") & pl.col("night") & (pl.col("amount") >= LARGE_AMOUNT),
    }
    logit = c["intercept"] + c["log_amount"] * pl.col("amount").log()
    for name, flag in flags.items():
        logit = logit + c[name] * flag
    scored = (
        _with_flags(frame)
        .filter((pl.col("amount") > 10) | (pl.col("channel") != "online"))
        .with_columns(p=1 / (1 + (-logit).exp()), **flags)
    )

    # when: expected and observed fraud counts overall and among rows with each flag
    subsets = {"all": scored, **{name: scored.filter(name) for name in flags}}
    checks = {
        name: (
            float(subset["is_fraud"].sum()),
            float(subset["p"].sum()),
            math.sqrt(float((subset["p"] * (1 - subset["p"])).sum())),
        )
        for name, subset in subsets.items()
    }

    # then: each within 4 standard deviations of the mechanism's expectation
    off = {
        name: (observed, round(expected, 1))
        for name, (observed, expected, spread) in checks.items()
        if abs(observed - expected) >= 4 * spread
    }
    assert not off


@pytest.mark.parametrize("rows", [0, -3])
def test_rows_below_one_is_rejected(rows: int) -> None:
    # when / then
    with pytest.raises(ValueError, match="rows must be at least 1"):
        generate_transactions(rows)


def test_bad_window_is_rejected() -> None:
    # when / then
    with pytest.raises(ValueError, match="days must be at least 1"):
        generate_transactions(100, days=0)
    with pytest.raises(ValueError, match="naive"):
        generate_transactions(100, start=datetime(2026, 1, 1, tzinfo=UTC))
