"""Validate JSON records (scoring requests) against the raw schema, one record at a time, in microseconds.

The rules are the raw Pandera schema's (`tasks.schemas.raw_schema`), compiled from the same `FeatureSpec.columns`:
type, nullability, `min` / `exclusive_min` / `max`, `allowed` values, finite floats, and a unique id column (within
one request). Pandera itself costs milliseconds per call, which is most of a scorer's latency budget, so the server
checks records with this compiled form; `tests/bentos/test_record_validation.py` runs both on the same records and
requires them to reject the same (record, field) pairs.

What JSON changes, documented because it is stricter than reading a CSV:
- values arrive typed, so a field must carry its column's JSON type: a number for `float` (an integral number for
  `integer`), a string for `string`, `true`/`false` for `boolean`, and for `datetime` a string in ISO 8601 (or in the
  spec's `timestamp.format` when one is set). A time with an offset is converted to UTC; one without is taken as UTC,
  as training's timestamps are.
- every raw column except the target is required (null only where the column is nullable) and no other field is
  allowed; the target column itself is refused (a scoring request does not know the outcome).
- when the spec has aggregates, the entity, timestamp and amount fields may not be null, since the online store
  cannot place such a row in a card's history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.config import ColumnSpec, FeatureSpec

__all__ = ["FieldError", "RecordValidator", "parse_timestamp"]

_MISSING = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RECORD = "(record)"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a record was refused: which record, which field, what was expected and what came."""

    record: int
    field: str
    expected: str
    got: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "expected": self.expected, "got": self.got}


class _Invalid(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _shown(value: object) -> str:
    text = "null" if value is None else repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def parse_timestamp(text: str, fmt: str | None) -> datetime:
    """A naive UTC datetime from ISO 8601 text (or `fmt`, a strftime format); raises ValueError when it is not one."""
    # RFC 3339 allows a lower-case 't' and 'z'; Python's ISO parser wants them upper-case.
    parsed = datetime.strptime(text.strip(), fmt) if fmt is not None else datetime.fromisoformat(text.strip().upper())
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("a number")
    try:
        return float(value)
    except OverflowError:
        raise _Invalid("a finite number (no NaN or infinity)") from None


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("an integer")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise _Invalid("an integer")
        value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _Invalid("an integer within 64 bits")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _datetime_parser(fmt: str | None) -> Callable[[object], datetime]:
    expected = f"a date-time string in the format {fmt!r}" if fmt else "an ISO 8601 date-time string"

    def parse(value: object) -> datetime:
        if not isinstance(value, str):
            raise _Invalid(expected)
        try:
            return parse_timestamp(value, fmt)
        except (ValueError, OverflowError):
            raise _Invalid(expected) from None

    return parse


def _format_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _column_check(column: ColumnSpec, fmt: str | None, required: bool) -> Callable[[object], object]:
    """One field's check: returns the typed value or raises _Invalid naming the expectation."""
    parse: Callable[[object], object] = {
        "float": _number,
        "integer": _integer,
        "string": _string,
        "boolean": _boolean,
    }.get(column.type) or _datetime_parser(fmt)
    nullable = column.nullable and not required
    numeric = column.type in ("float", "integer")
    low, high, exclusive = column.min, column.max, column.exclusive_min
    allowed = frozenset(column.allowed) if column.allowed is not None and column.type == "string" else None
    allowed_text = ", ".join(column.allowed or [])
    finite = column.type == "float"

    def check(value: object) -> object:
        if value is None:
            if nullable:
                return None
            raise _Invalid("a value (this field may not be null)")
        typed = parse(value)
        if finite and not math.isfinite(typed):  # type: ignore[arg-type]
            raise _Invalid("a finite number (no NaN or infinity)")
        if numeric:
            if low is not None and (typed <= low if exclusive else typed < low):  # type: ignore[operator]
                raise _Invalid(f"a number {'>' if exclusive else '>='} {_format_bound(low)}")
            if high is not None and typed > high:  # type: ignore[operator]
                raise _Invalid(f"a number <= {_format_bound(high)}")
        if allowed is not None and typed not in allowed:
            raise _Invalid(f"one of: {allowed_text}")
        return typed

    return check


class RecordValidator:
    """Compiled raw-schema checks for JSON records; `validate` returns typed records or every field error."""

    def __init__(self, spec: FeatureSpec, target_column: str | None) -> None:
        fmt = spec.timestamp.format if spec.timestamp is not None else None
        required: set[str] = set()
        if spec.aggregates is not None:
            assert spec.entity_column is not None and spec.timestamp is not None  # FeatureSpec validation
            required = {spec.entity_column, spec.timestamp.column, spec.aggregates.amount_column}
        self.fields: tuple[str, ...] = tuple(name for name in spec.columns if name != target_column)
        self._checks = [
            (name, _column_check(spec.columns[name], fmt if _is_time(spec, name) else None, name in required))
            for name in self.fields
        ]
        self._known = frozenset(self.fields)
        self._target = target_column
        self._id_column = spec.id_column if spec.id_column in self._known else None

    def validate(self, records: Sequence[object]) -> tuple[list[dict[str, Any]], list[FieldError]]:
        typed_records: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                errors.append(FieldError(index, _RECORD, "a JSON object with the transaction's fields", _shown(record)))
                typed_records.append({})
                continue
            typed: dict[str, Any] = {}
            for name, check in self._checks:
                value = record.get(name, _MISSING)
                if value is _MISSING:
                    errors.append(FieldError(index, name, "a value (this field is required)"))
                    continue
                try:
                    typed[name] = check(value)
                except _Invalid as invalid:
                    errors.append(FieldError(index, name, invalid.expected, _shown(value)))
            if len(record) != len(typed) or len(typed) != len(self._checks):
                for name in record:
                    if name not in self._known:
                        reason = "no target column in a scoring request" if name == self._target else "no such field"
                        errors.append(FieldError(index, str(name), reason, _shown(record[name])))
            typed_records.append(typed)
        if self._id_column is not None and len(records) > 1:
            errors += self._duplicate_ids(typed_records)
        return typed_records, errors

    def _duplicate_ids(self, typed_records: list[dict[str, Any]]) -> list[FieldError]:
        assert self._id_column is not None
        seen: dict[object, list[int]] = {}
        for index, record in enumerate(typed_records):
            value = record.get(self._id_column)
            if value is not None:
                seen.setdefault(value, []).append(index)
        return [
            FieldError(index, self._id_column, "a value unique within the request", _shown(value))
            for value, indexes in seen.items()
            if len(indexes) > 1
            for index in indexes
        ]


def _is_time(spec: FeatureSpec, name: str) -> bool:
    return spec.timestamp is not None and spec.timestamp.column == name
