"""Ingest: read a raw CSV or Parquet file, coerce it to the declared types, validate it with the raw Pandera schema,
and set aside rows that fail, with their reasons, in a quarantine Parquet file.

A row that fails is never silently dropped: it goes to quarantine with every reason it failed. Problems that make
the whole file unusable (missing file, missing columns, a target that is not binary, too many rejects) raise an
`IngestError` whose message names the file and the column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandera.polars as pa
import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.config import FeatureSpec, TargetSpec, ValidationSpec
from tasks.messages import first_line
from tasks.schemas import ROW_COLUMN, coerce_to_schema, raw_schema, row_reasons

__all__ = [
    "IngestError",
    "IngestReport",
    "IngestResult",
    "file_sha256",
    "ingest_file",
    "read_raw_file",
    "target_labels",
    "validate_raw_frame",
]

REASONS_COLUMN = "_reasons"


class IngestError(ValueError):
    """The input cannot be used as a whole; the message names the file and what was expected."""


class IngestReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    data_hash: str
    rows_read: int
    rows_rejected: int
    rejected_share: float
    quarantine_path: str | None
    rejects_by_check: dict[str, int]


@dataclass(frozen=True)
class IngestResult:
    frame: pl.DataFrame
    report: IngestReport


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt"):
        return "csv"
    raise IngestError(f"{path}: cannot tell the format from the suffix {suffix!r}; set data.format to csv or parquet")


def read_raw_file(path: Path, declared_format: str = "auto") -> pl.DataFrame:
    """Read the whole file; CSV columns arrive as text so that type errors become per-row rejects, not a crash."""
    if not path.exists():
        raise IngestError(f"{path}: file not found")
    if not path.is_file():
        raise IngestError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty")
    fmt = _format_of(path, declared_format)
    try:
        frame = pl.read_parquet(path) if fmt == "parquet" else pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise IngestError(f"{path}: cannot read as {fmt}: {first_line(error)}") from error
    if frame.height == 0:
        raise IngestError(f"{path}: no data rows (only a header or an empty table)")
    return frame


def _schema_failures(frame: pl.DataFrame, schema: pa.DataFrameSchema, id_column: str | None) -> pl.DataFrame:
    """Run the raw schema lazily (every failure at once) and return one row per (row, failed check)."""
    try:
        schema.validate(frame, lazy=True)
        cases = None
    except pa.errors.SchemaErrors as error:
        cases = error.failure_cases
    empty = pl.DataFrame(schema={ROW_COLUMN: pl.UInt32, "check": pl.String, "reason": pl.String})
    if cases is None:
        return empty
    row_level = cases.filter(pl.col("index").is_not_null() & (pl.col("check") != "field_uniqueness"))
    table_level = cases.filter(pl.col("index").is_null())
    if table_level.height:
        # A dtype or missing-column failure concerns the whole column: no row can be blamed, so it stops the run.
        first = table_level.row(0, named=True)
        raise IngestError(f"column {first['column']!r}: {first['check']} (got {first['failure_case']})")
    out: pl.DataFrame = row_level.select(
        pl.col("index").cast(pl.UInt32).alias(ROW_COLUMN),
        pl.col("check").cast(pl.String),
        pl.format("{}: {} (got {})", pl.col("column"), pl.col("check"), pl.col("failure_case")).alias("reason"),
    )
    if id_column is not None:
        # Keep the first occurrence of a repeated id; only the later copies are rejected.
        duplicates = (
            frame.select(pl.col(id_column), (~pl.col(id_column).is_first_distinct()).alias("dup"))
            .with_row_index(ROW_COLUMN)
            .filter(pl.col("dup") & pl.col(id_column).is_not_null())
        )
        out = pl.concat(
            [
                out,
                duplicates.select(
                    ROW_COLUMN,
                    pl.lit("unique").alias("check"),
                    pl.format("{}: duplicate id (got {})", pl.lit(id_column), pl.col(id_column)).alias("reason"),
                ),
            ]
        )
    return out


def _reject_nulls_left_by_casts(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    nulls = [
        (pl.col(name).is_null(), pl.lit(f"{name}: not_nullable (got null)"))
        for name, column in spec.columns.items()
        if not column.nullable
    ]
    return row_reasons(frame, nulls, "not_nullable")


def _check_columns(frame: pl.DataFrame, spec: FeatureSpec, validation: ValidationSpec, source: str) -> pl.DataFrame:
    missing = [name for name in spec.columns if name not in frame.columns]
    if missing:
        raise IngestError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(spec.columns)}")
    extra = [name for name in frame.columns if name not in spec.columns]
    if extra and validation.extra_columns == "reject":
        raise IngestError(
            f"{source}: unexpected column(s) {', '.join(extra)}; declare them under spec.columns "
            "or set validation.extra_columns: ignore"
        )
    frame = frame.select(list(spec.columns))
    all_null = [name for name in spec.columns if frame[name].null_count() == frame.height]
    if all_null:
        raise IngestError(f"{source}: column(s) {', '.join(all_null)} are entirely null; a feature needs values")
    return frame


def target_labels(frame: pl.DataFrame, target: TargetSpec, source: str) -> pl.Series:
    """The 0/1 label; the target must hold exactly two classes, one of them the configured positive value."""
    values = frame[target.column].drop_nulls().unique().sort()
    shown = ", ".join(repr(v) for v in values.head(5).to_list())
    if values.len() > 2:
        raise IngestError(
            f"{source}: target column {target.column!r} must hold two classes, found {values.len()} ({shown}, ...)"
        )
    positive = pl.Series([target.positive]).cast(values.dtype, strict=False)[0]
    if values.len() < 2 or positive not in values.to_list():
        raise IngestError(
            f"{source}: target column {target.column!r} has only one class ({shown}); "
            f"training needs both the positive value {target.positive!r} and another"
        )
    labels: pl.Series = (frame[target.column] == positive).cast(pl.Int8).rename("label")
    return labels


def validate_raw_frame(
    frame: pl.DataFrame,
    spec: FeatureSpec,
    target: TargetSpec,
    validation: ValidationSpec,
    *,
    source: str,
    data_hash: str,
    quarantine_dir: Path,
) -> IngestResult:
    """Coerce and validate a raw frame; good rows come back typed, bad rows go to quarantine with reasons."""
    frame = _check_columns(frame, spec, validation, source)
    timestamp_format = spec.timestamp.format if spec.timestamp is not None else None
    typed, type_failures = coerce_to_schema(frame, spec, timestamp_format)
    schema_failures = _schema_failures(typed, raw_schema(spec, target.column), spec.id_column)
    null_failures = _reject_nulls_left_by_casts(typed, spec)
    failures = pl.concat([type_failures, schema_failures, null_failures]).unique(
        subset=[ROW_COLUMN, "reason"], maintain_order=True
    )
    # A value that failed its cast is null afterwards: its null is a consequence, not a second reason.
    failures = failures.filter(
        ~(
            (pl.col("check") == "not_nullable")
            & pl.col(ROW_COLUMN).is_in(failures.filter(pl.col("check") == "type")[ROW_COLUMN].implode())
        )
    )
    rejected_rows = failures[ROW_COLUMN].unique().sort()
    rows_rejected = rejected_rows.len()
    quarantine_path: Path | None = None
    if rows_rejected:
        reasons = failures.group_by(ROW_COLUMN, maintain_order=True).agg(
            pl.col("reason").str.join("; ").alias(REASONS_COLUMN)
        )
        quarantined = (
            frame.with_row_index(ROW_COLUMN)
            .join(reasons, on=ROW_COLUMN, how="inner")
            .sort(ROW_COLUMN)
            .with_columns(pl.exclude(ROW_COLUMN, REASONS_COLUMN).cast(pl.String))
        )
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        quarantine_path = quarantine_dir / f"{Path(source).stem}-{data_hash[:12]}.quarantine.parquet"
        quarantined.write_parquet(quarantine_path)
    share = rows_rejected / frame.height
    by_check = dict(failures.group_by("check").len().sort("check").iter_rows())
    report = IngestReport(
        source=source,
        data_hash=data_hash,
        rows_read=frame.height,
        rows_rejected=rows_rejected,
        rejected_share=share,
        quarantine_path=str(quarantine_path) if quarantine_path else None,
        rejects_by_check={str(k): int(v) for k, v in by_check.items()},
    )
    if share > validation.max_reject_share:
        first = failures.sort(ROW_COLUMN).head(3)["reason"].to_list()
        raise IngestError(
            f"{source}: {rows_rejected} of {frame.height} rows rejected ({share:.2%}), over the allowed "
            f"{validation.max_reject_share:.2%}; reasons are in {quarantine_path}; first: {'; '.join(first)}"
        )
    clean = typed.with_row_index(ROW_COLUMN).filter(~pl.col(ROW_COLUMN).is_in(rejected_rows.implode()))
    clean = clean.drop(ROW_COLUMN)
    if clean.height == 0:
        raise IngestError(f"{source}: no valid rows left after validation")
    return IngestResult(frame=clean, report=report)


def ingest_file(
    path: Path,
    declared_format: str,
    spec: FeatureSpec,
    target: TargetSpec,
    validation: ValidationSpec,
    quarantine_dir: Path,
) -> IngestResult:
    frame = read_raw_file(path, declared_format)
    return validate_raw_frame(
        frame,
        spec,
        target,
        validation,
        source=str(path),
        data_hash=file_sha256(path),
        quarantine_dir=quarantine_dir,
    )
