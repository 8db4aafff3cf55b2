"""Read one window of the scorer's prediction log (`tasks.prediction_log`) for the drift watch.

Every `*.jsonl` file of the log folder and its rotated backups (`*.jsonl.1`, ...; `.gz` too) is read; a file last
written before the window starts is skipped unread, because a line is always written after the moment it records.
Lines are parsed with Polars against a fixed schema (the prediction-log format, with the champion's features and
their kinds), a whole file at a time. A file holding a bad line is parsed again in chunks, and a chunk that fails in
lines: those that are not JSON objects are dropped first, then the chunk is halved until each bad line stands alone.
Bad lines (not JSON, a wrong type, a missing field, an unreadable time, a score outside [0, 1], an unknown decision)
are counted, never fatal; a half-written last line of a file being written counts as one of them.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from tasks.drift import SCORE_COLUMN, DriftError, DriftWindow, FeatureKind, LogStats
from tasks.prediction_log import LOG_ENV

__all__ = ["DECISION_COLUMN", "log_schema", "prediction_log_folder", "read_prediction_window"]

DECISION_COLUMN = "_decision"
_FILE_NAME = re.compile(r"\.jsonl(\.\d+)?(\.gz)?$")
_CHUNK_LINES = 8192
_DTYPES: dict[str, pl.DataType] = {"numeric": pl.Float64(), "categorical": pl.String(), "boolean": pl.Boolean()}
# The scorer writes datetime.isoformat(): microseconds (left out when zero) and a +00:00 offset.
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def prediction_log_folder(environ: Mapping[str, str], home: Path) -> Path:
    """The folder the scorer writes its log to (SCOREGATE_PREDICTION_LOG, default `home/predictions`)."""
    target = environ.get(LOG_ENV, "").strip()
    if target == "-" or target.lower() in ("off", "none", "0", "false"):
        raise DriftError(
            f"{LOG_ENV}={target!r}: the scorer writes no prediction log files the drift watch could read; "
            f"point it at a folder (default {home / 'predictions'})"
        )
    return Path(target) if target else home / "predictions"


def log_schema(kinds: Mapping[str, FeatureKind]) -> dict[str, pl.DataType]:
    """The fields of a log line the drift watch reads, with the features typed by kind."""
    return {
        "time": pl.String(),
        "model_name": pl.String(),
        "model_version": pl.String(),
        "score": pl.Float64(),
        "decision": pl.String(),
        "features": pl.Struct({name: _DTYPES[kind] for name, kind in kinds.items()}),
    }


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _parse(payload: bytes, schema: Mapping[str, pl.DataType]) -> pl.DataFrame | None:
    try:
        return pl.read_ndjson(payload, schema=dict(schema))
    except (pl.exceptions.PolarsError, ValueError):
        return None


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return False


def _bisect(lines: list[bytes], schema: Mapping[str, pl.DataType]) -> tuple[list[pl.DataFrame], int]:
    """Frames of the good lines and the count of bad ones, halving until each bad line is alone."""
    frame = _parse(b"\n".join(lines), schema)
    if frame is not None:
        return [frame], 0
    if len(lines) == 1:
        return [], 1
    middle = len(lines) // 2
    left, bad_left = _bisect(lines[:middle], schema)
    right, bad_right = _bisect(lines[middle:], schema)
    return left + right, bad_left + bad_right


def _parse_lines(lines: list[bytes], schema: Mapping[str, pl.DataType]) -> tuple[list[pl.DataFrame], int]:
    frames: list[pl.DataFrame] = []
    bad = 0
    for start in range(0, len(lines), _CHUNK_LINES):
        chunk = lines[start : start + _CHUNK_LINES]
        frame = _parse(b"\n".join(chunk), schema)
        if frame is not None:
            frames.append(frame)
            continue
        objects = [line for line in chunk if _is_object(line)]
        bad += len(chunk) - len(objects)
        if objects:
            good, wrong = _bisect(objects, schema)
            frames += good
            bad += wrong
    return frames, bad


def read_prediction_window(
    folder: Path,
    *,
    model_name: str,
    model_version: str,
    window: DriftWindow,
    kinds: Mapping[str, FeatureKind],
) -> tuple[pl.DataFrame, LogStats]:
    """The window's rows of one model version: the features, `_score` and `_decision`, with counts of the rest."""
    schema = log_schema(kinds)
    files = sorted(path for path in folder.glob("*.jsonl*") if path.is_file() and _FILE_NAME.search(path.name))
    frames: list[pl.DataFrame] = []
    lines = malformed = skipped = 0
    for path in files:
        try:
            if path.stat().st_mtime < window.start.timestamp():
                skipped += 1
                continue
            data = _read_bytes(path)
        except FileNotFoundError:
            # Rotated away between the listing and the read: its lines are in the next file of the listing.
            continue
        whole = _parse(data, schema)
        if whole is not None:
            frames.append(whole)
            lines += whole.height
            continue
        split = [line for line in data.split(b"\n") if line.strip()]
        lines += len(split)
        parsed, bad = _parse_lines(split, schema)
        frames += parsed
        malformed += bad
    empty = pl.DataFrame(schema=schema)
    frame = pl.concat([empty, *frames], how="vertical") if frames else empty
    feature_names = list(kinds)
    # An aware datetime for every line; a line whose time does not parse is malformed, like one that is not JSON.
    frame = frame.with_columns(
        pl.col("time")
        .str.replace(r"Z$", "+00:00")
        .str.to_datetime(format=_TIME_FORMAT, time_zone="UTC", strict=False, time_unit="us")
        .alias("_time")
    )
    valid = (
        pl.col("_time").is_not_null()
        & pl.col("model_name").is_not_null()
        & pl.col("model_version").is_not_null()
        & pl.col("features").is_not_null()
        & pl.col("score").is_not_null()
        & pl.col("score").is_between(0.0, 1.0)
        & pl.col("decision").is_in(["approve", "decline"])
    )
    flags = frame.select(
        valid.fill_null(False).alias("valid"),
        ((pl.col("model_name") == model_name) & (pl.col("model_version") == model_version))
        .fill_null(False)
        .alias("mine"),
        ((pl.col("_time") >= window.start) & (pl.col("_time") < window.end)).fill_null(False).alias("inside"),
    )
    valid_mask, mine, inside = flags["valid"], flags["mine"], flags["inside"]
    keep = valid_mask & mine & inside
    rows = frame.filter(keep).select(
        *[pl.col("features").struct.field(name).alias(name) for name in feature_names],
        pl.col("score").alias(SCORE_COLUMN),
        pl.col("decision").alias(DECISION_COLUMN),
    )
    stats = LogStats(
        folder=str(folder),
        files=len(files),
        files_skipped_old=skipped,
        lines=lines,
        malformed=malformed + int((~valid_mask).sum()),
        other_model=int((valid_mask & ~mine).sum()),
        outside_window=int((valid_mask & mine & ~inside).sum()),
        rows=rows.height,
    )
    return rows, stats
