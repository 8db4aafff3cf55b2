"""The online feature path (store history + window arithmetic + compiled encoding) equals the batch pipeline."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.config import AggregateSpec
from tasks.entity_history import AggregatePlan, EntityHistory
from tasks.online_features import OnlineFeatures, epoch_ms
from tasks.record_validation import RecordValidator
from tasks.sample_bento import SampleModel
from tests.bentos.conftest import request_records

HOUR_MS = 3_600_000


def replay_online(sample: SampleModel) -> tuple[np.ndarray, np.ndarray]:
    """Every sample row through validation, a per-card EntityHistory and OnlineFeatures, in time order."""
    features = OnlineFeatures(sample.model.pipeline)
    assert features.plan is not None
    typed, errors = RecordValidator(sample.config.spec, "is_fraud").validate(request_records(sample.frame))
    assert errors == []
    histories: dict[str, EntityHistory] = {}
    aggregates, design = [], []
    for record in typed:
        history = histories.setdefault(record["card_id"], EntityHistory())
        time_ms, amount = epoch_ms(record["timestamp"]), record["amount"]
        values = history.aggregates(time_ms, amount, features.plan)
        history.append(time_ms, amount)
        history.trim(features.plan.retention_ms)
        aggregates.append(values)
        design.append(features.design_row(features.base_row(record, values)))
    return np.asarray(aggregates), np.asarray(design)


def test_online_aggregates_and_design_equal_the_batch_pipeline(sample: SampleModel) -> None:
    # given every generated transaction, replayed one at a time in time order
    aggregates, design = replay_online(sample)
    # then the aggregates equal the batch job's (computed over the whole frame at once)
    plan = OnlineFeatures(sample.model.pipeline).plan
    assert plan is not None
    batch_aggregates = sample.prepared.base.select(list(plan.names)).to_numpy()
    np.testing.assert_allclose(aggregates, batch_aggregates, rtol=1e-12, atol=0)
    # and so does every model input, and the score
    batch_design = sample.model.pipeline.design_from_base(sample.prepared.base).to_numpy()
    np.testing.assert_allclose(design, batch_design, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        sample.model.score_design(design), sample.model.score_design(batch_design), rtol=0, atol=1e-12
    )


def test_an_unseen_level_encodes_like_the_batch_pipeline(sample: SampleModel) -> None:
    # given rows whose merchant category training never saw, next to a known one
    rows = sample.frame.head(3).with_columns(pl.Series("merchant_category", ["space-tourism", "grocery", "?"]))
    features = OnlineFeatures(sample.model.pipeline)
    typed, errors = RecordValidator(sample.config.spec, "is_fraud").validate(request_records(rows))
    assert errors == []
    # when both paths encode them (the category columns do not depend on the aggregates)
    no_history = [0.0] * 6 + [720.0, 1.0]
    online = np.asarray([features.design_row(features.base_row(record, no_history)) for record in typed])
    batch = sample.model.pipeline.transform(rows.drop("is_fraud")).to_numpy()
    # then the category columns agree: the unseen level lands in the same bucket, without an error
    columns = [i for i, name in enumerate(features.design_columns) if name.startswith("merchant_category[")]
    np.testing.assert_array_equal(online[:, columns], batch[:, columns])
    assert online[0, columns].tolist() == online[2, columns].tolist()


def test_a_row_at_the_same_millisecond_is_not_history() -> None:
    plan = AggregatePlan.from_spec(AggregateSpec(amount_column="amount", windows=["1h"]))
    history = EntityHistory()
    history.append(10 * HOUR_MS, 5.0)
    # a twin at the same instant sees nothing, a row a millisecond later sees it
    assert history.aggregates(10 * HOUR_MS, 7.0, plan) == [0.0, 0.0, plan.no_history_hours, 1.0]
    assert history.aggregates(10 * HOUR_MS + 1, 10.0, plan) == [1.0, 5.0, 1 / HOUR_MS, 2.0]


def test_trimming_keeps_the_window_and_one_older_anchor() -> None:
    # given a card with events at hours 0, 1, 2 and 30 and a 24h retention
    plan = AggregatePlan.from_spec(AggregateSpec(amount_column="amount", windows=["1h", "24h"]))
    history = EntityHistory()
    for hour, amount in ((0, 1.0), (1, 2.0), (2, 4.0), (30, 8.0)):
        history.append(hour * HOUR_MS, amount)
    # when it is trimmed
    history.trim(plan.retention_ms)
    # then events before hour 6 are dropped except the latest of them, and the totals still cover everything
    assert history.times == [2 * HOUR_MS, 30 * HOUR_MS]
    assert (history.count, history.total) == (4, 15.0)
    # and a row at hour 30 (a twin of the newest) still knows its previous event and the whole-history mean
    count_1h, sum_1h, count_24h, sum_24h, hours, ratio = history.aggregates(30 * HOUR_MS, 14.0, plan)
    assert (count_1h, sum_1h, count_24h, sum_24h) == (0.0, 0.0, 0.0, 0.0)
    assert hours == 28.0
    assert ratio == pytest.approx(14.0 / (7.0 / 3))


def test_the_binary_form_round_trips_exactly() -> None:
    history = EntityHistory()
    for time_ms, amount in ((1_700_000_000_123, 0.1), (1_700_000_000_999, 1e-300), (1_700_000_000_999, 12345.678)):
        history.append(time_ms, amount)
    restored = EntityHistory.from_bytes(history.to_bytes())
    assert (restored.count, restored.total, restored.times, restored.amounts) == (
        history.count,
        history.total,
        history.times,
        history.amounts,
    )
    assert EntityHistory.from_bytes(None).count == 0
