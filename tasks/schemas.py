"""Pandera schemas on Polars: the raw input schema (built from the FeatureSpec) and the feature schema.

The raw schema is the contract between whoever produces transactions and this pipeline; the serving layer checks
requests with the same schema, so training and serving reject the same things.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl

from tasks.config import ColumnSpec, ColumnType, FeatureSpec

__all__ = [
    "POLARS_TYPES",
    "ROW_COLUMN",
    "coerce_to_schema",
    "row_reasons",
    "feature_schema",
    "raw_schema",
]

ROW_COLUMN = "_row"
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]

POLARS_TYPES: dict[ColumnType, pl.DataType] = {
    "float": pl.Float64(),
    "integer": pl.Int64(),
    "string": pl.String(),
    "boolean": pl.Boolean(),
    "datetime": pl.Datetime("us"),
}


def _column_checks(spec: ColumnSpec) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if spec.min is not None:
        checks.append(pa.Check.gt(spec.min) if spec.exclusive_min else pa.Check.ge(spec.min))
    if spec.max is not None:
        checks.append(pa.Check.le(spec.max))
    if spec.allowed is not None:
        checks.append(pa.Check.isin(spec.allowed))
    if spec.type == "float":
        checks.append(_finite_check())
    return checks


def _is_finite(data: Any) -> pl.LazyFrame:
    frame: pl.LazyFrame = data.lazyframe
    return frame.select(pl.col(data.key).is_finite())


def _finite_check() -> pa.Check:
    return pa.Check(_is_finite, name="finite", error="expected a finite number (no NaN or infinity)")


def _coerce(column: str, spec: ColumnSpec, dtype: pl.DataType, timestamp_format: str | None) -> pl.Expr:
    source = pl.col(column)
    target = POLARS_TYPES[spec.type]
    if dtype == target:
        return source
    if dtype == pl.String:
        text = source.str.strip_chars()
        if spec.type == "boolean":
            lowered = text.str.to_lowercase()
            return (
                pl.when(lowered.is_in(_TRUE))
                .then(pl.lit(True))
                .when(lowered.is_in(_FALSE))
                .then(pl.lit(False))
                .otherwise(pl.lit(None, dtype=pl.Boolean))
            )
        if spec.type == "datetime":
            parsed = text.str.to_datetime(format=timestamp_format, strict=False, time_unit="us")
            return parsed
        return text.cast(target, strict=False)
    if spec.type == "datetime" and isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return source.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(target)
    return source.cast(target, strict=False)


def row_reasons(frame: pl.DataFrame, failures: list[tuple[pl.Expr, pl.Expr]], check: str) -> pl.DataFrame:
    """One row per (row, failed condition) as (row index, check, reason).

    `failures` pairs a boolean condition with the reason text for rows where it holds. Only rows where some
    condition holds are unpivoted: on ten million clean rows that is a filter, not a hundred-million-row table.
    """
    empty = pl.DataFrame(schema={ROW_COLUMN: pl.UInt32, "check": pl.String, "reason": pl.String})
    if not failures:
        return empty
    failing = frame.with_row_index(ROW_COLUMN).filter(pl.any_horizontal([condition for condition, _ in failures]))
    if failing.height == 0:
        return empty
    reasons = failing.select(
        ROW_COLUMN,
        *[
            pl.when(condition).then(reason).otherwise(None).alias(f"_{i}")
            for i, (condition, reason) in enumerate(failures)
        ],
    )
    return (
        reasons.unpivot(index=ROW_COLUMN, value_name="reason")
        .drop_nulls("reason")
        .select(ROW_COLUMN, pl.lit(check).alias("check"), "reason")
    )


def coerce_to_schema(
    frame: pl.DataFrame, spec: FeatureSpec, timestamp_format: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast every declared column present; a value that does not parse becomes a per-row reason and a null.

    Returns the typed frame and a long frame (row, check, reason) of the values that did not parse.
    """
    casts = []
    failures: list[tuple[pl.Expr, pl.Expr]] = []
    for name, column in spec.columns.items():
        if name not in frame.columns:
            continue
        fmt = timestamp_format if spec.timestamp is not None and name == spec.timestamp.column else None
        expr = _coerce(name, column, frame.schema[name], fmt)
        casts.append(expr.alias(name))
        if frame.schema[name] == POLARS_TYPES[column.type]:
            continue  # already the declared type: nothing can fail to parse
        failures.append(
            (
                pl.col(name).is_not_null() & expr.is_null(),
                pl.format("{}: expected {}, got {}", pl.lit(name), pl.lit(column.type), pl.col(name).cast(pl.String)),
            )
        )
    return frame.with_columns(casts), row_reasons(frame, failures, "type")


def raw_schema(spec: FeatureSpec, target_column: str, *, labelled: bool = True) -> pa.DataFrameSchema:
    """The schema a raw input frame must satisfy; `labelled=False` for scoring requests, which carry no target."""
    columns: dict[str, pa.Column] = {}
    for name, column in spec.columns.items():
        if name == target_column:
            if labelled:
                # The target is checked as a whole (exactly two classes) by ingest; here only presence and nulls.
                columns[name] = pa.Column(POLARS_TYPES[column.type], nullable=False)
            continue
        columns[name] = pa.Column(
            POLARS_TYPES[column.type],
            checks=_column_checks(column),
            nullable=column.nullable,
            unique=name == spec.id_column,
        )
    return pa.DataFrameSchema(columns, strict=False, name="raw_input")


def feature_schema(design_columns: list[str]) -> pa.DataFrameSchema:
    """Every design-matrix column is a finite float: a NaN or infinity here would corrupt training silently."""
    return pa.DataFrameSchema(
        {name: pa.Column(pl.Float64, checks=[_finite_check()], nullable=False) for name in design_columns},
        strict=True,
        name="features",
    )
