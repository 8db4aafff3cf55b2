"""The scorer's compiled record checks refuse exactly what the raw Pandera schema refuses.

Rows are drawn by a seeded generator from valid values and from values that break one rule each (range, allowed
values, NaN / infinity, nulls, duplicate ids); Pandera validates them as a typed frame (as ingest sees data after
parsing), the RecordValidator as JSON records (as the service sees them), and the refused (row, field) pairs must be
the same.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest

from tasks.config import load_training_config
from tasks.record_validation import RecordValidator, parse_timestamp
from tasks.schemas import raw_schema

SPEC = load_training_config(Path(__file__).resolve().parents[2] / "tasks" / "configs" / "card_fraud.yaml").spec
TARGET = "is_fraud"
START = datetime(2026, 3, 1)

# Per field: values the raw schema accepts, and values it refuses (all of the column's type).
VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "amount": ([0.01, 1.0, 999_999.5, 1_000_000.0], [0.0, -1.0, 1_000_000.01, math.nan, math.inf, -math.inf, None]),
    "channel": (["online", "pos", "atm"], ["ONLINE", "web", "", None]),
    "card_id": (["card-1", "card-2", ""], [None]),
    "merchant_category": (["grocery", "never-seen"], [None]),
    "device_seen_before": ([True, False], [None]),
}


def valid_row(index: int) -> dict[str, Any]:
    return {
        "transaction_id": f"tx-{index}",
        "card_id": "card-1",
        "timestamp": START + timedelta(minutes=index),
        "amount": 10.0,
        "merchant_category": "grocery",
        "merchant_country": "FR",
        "card_country": "DE",
        "channel": "pos",
        "device_seen_before": True,
    }


def draw_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        row = valid_row(index)
        for field in rng.choice(list(VALUES), size=int(rng.integers(0, 3)), replace=False):
            good, bad = VALUES[str(field)]
            pool = bad if rng.random() < 0.5 else good
            row[str(field)] = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.05 and index > 0:
            row["transaction_id"] = f"tx-{index - 1}"  # a duplicate id
        rows.append(row)
    return rows


def pandera_refusals(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    schema_overrides = {
        "amount": pl.Float64,
        "device_seen_before": pl.Boolean,
        "timestamp": pl.Datetime("us"),
        **{name: pl.String for name in ("transaction_id", "card_id", "merchant_category", "channel")},
        **{name: pl.String for name in ("merchant_country", "card_country")},
    }
    frame = pl.DataFrame(rows, schema_overrides=schema_overrides)
    try:
        raw_schema(SPEC, TARGET, labelled=False).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as error:
        cases = error.failure_cases
        return {(int(row["index"]), str(row["column"])) for row in cases.iter_rows(named=True)}
    return set()


def validator_refusals(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    as_json = [{**row, "timestamp": row["timestamp"].isoformat()} for row in rows]
    _, errors = RecordValidator(SPEC, TARGET).validate(as_json)
    return {(error.record, error.field) for error in errors}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_validator_refuses_what_the_raw_schema_refuses(seed: int) -> None:
    # given rows with a mix of valid values and values that break one rule each
    rows = draw_rows(150, seed)
    # when Pandera (the raw schema) and the compiled validator check them
    expected = pandera_refusals(rows)
    actual = validator_refusals(rows)
    # then they refuse the same (row, field) pairs, and there was something to refuse
    assert expected, "the draw should contain invalid rows"
    assert actual == expected


def test_valid_records_come_back_typed() -> None:
    record = {**valid_row(0), "timestamp": "2026-03-01T12:30:00.250+02:00"}
    typed, errors = RecordValidator(SPEC, TARGET).validate([record])
    assert errors == []
    assert typed[0]["timestamp"] == datetime(2026, 3, 1, 10, 30, 0, 250_000)
    assert typed[0]["amount"] == 10.0 and isinstance(typed[0]["amount"], float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12)),
        ("2026-03-01t12:00:00z", datetime(2026, 3, 1, 12)),
        ("2026-03-01 12:00:00-01:00", datetime(2026, 3, 1, 13)),
        ("2026-03-01T12:00:00.123456789Z", datetime(2026, 3, 1, 12, 0, 0, 123456)),
    ],
)
def test_iso_timestamps_are_read_as_naive_utc(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, None) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00", "2026-03-01T23:59:60Z", ""])
def test_text_that_is_no_timestamp_is_refused(value: str) -> None:
    record = {**valid_row(0), "timestamp": value}
    _, errors = RecordValidator(SPEC, TARGET).validate([record])
    assert [(e.field, e.expected) for e in errors] == [("timestamp", "an ISO 8601 date-time string")]
