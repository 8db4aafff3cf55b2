"""The prediction log: a sample of scored records as JSON lines, for the drift watch.

Where: `SCOREGATE_PREDICTION_LOG` = a folder (default `$SCOREGATE_HOME/predictions`), `-` for standard output, or
`off`. Each process writes its own file, `predictions-<host>-<pid>.jsonl`, so replicas sharing a volume never
interleave lines; when a file passes `max_bytes` it is renamed `....jsonl.1` (older ones shift to .2, .3, ... and the
oldest beyond `backups` is deleted) and a new file is started.
Sampling: `SCOREGATE_PREDICTION_SAMPLE` in [0, 1] (default 1.0). The decision is a hash of the request id and the
record's position, so it is reproducible and the same for every line of a request id and position.
Writes are buffered and flushed at least every `flush_interval_s` (the server calls `flush()` on a timer and on exit).
A write that fails (a full disk, a deleted folder) never fails the scoring request: the lines of that flush are
dropped and counted in `dropped_lines`, one warning is logged per run of failures, and the next flush starts over
(the folder is made again, the file reopened).

Line format (one JSON object per line, UTF-8, keys always present unless marked optional):
    {"time": "2026-03-01T12:00:00.123456+00:00",   # when the record was scored, UTC, ISO 8601
     "request_id": "9f0c...-17",                    # the response's request id (X-Request-ID or generated)
     "record": 0,                                   # position of the record in its request
     "id": "tx-000123",                             # the id column's value (null when the spec has none)
     "event_time": "2026-02-28T23:59:01",           # the record's own timestamp, naive UTC (null without one)
     "model_name": "scoregate-fraud", "model_version": "3",
     "score": 0.0123, "decision": "approve",        # decision is "decline" or "approve"
     "threshold": 0.31, "threshold_version": "3.max_f1",
     "features": {"amount": 12.5, "merchant_category": "grocery", "count_1h": 0.0, ...}}
`features` holds every FeatureSpec feature before encoding (raw, derived and aggregate values): the batch base
frame's columns, so the drift watch compares them with the training split's and can rebuild the design matrix with
`FeaturePipeline.design_from_base`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from tasks import fast_json

__all__ = ["LOG_ENV", "SAMPLE_ENV", "PredictionLog", "open_prediction_log"]

LOG_ENV = "SCOREGATE_PREDICTION_LOG"
SAMPLE_ENV = "SCOREGATE_PREDICTION_SAMPLE"
_SAMPLE_SCALE = 2**32
logger = logging.getLogger("scoregate.prediction_log")


class PredictionLog:
    """Buffered, sampled, size-rotated JSON-lines writer (or a writer to a stream such as stdout)."""

    def __init__(
        self,
        folder: Path | None,
        *,
        stream: TextIO | None = None,
        sample: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 5,
        buffer_lines: int = 256,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"{SAMPLE_ENV} must lie in [0, 1], got {sample}")
        self.folder = folder
        self.sample = sample
        self.max_bytes = max_bytes
        self.backups = backups
        self._threshold = int(sample * _SAMPLE_SCALE)
        self._buffer: list[str] = []
        self._buffer_lines = buffer_lines
        self._stream = stream
        self._file: TextIO | None = None
        self._written = 0
        self._failing = False
        self.dropped_lines = 0
        self.path: Path | None = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / f"predictions-{socket.gethostname()}-{os.getpid()}.jsonl"

    def sampled(self, request_id: str, record: int) -> bool:
        if self._threshold >= _SAMPLE_SCALE:
            return True
        return zlib.crc32(f"{request_id}/{record}".encode()) < self._threshold

    def write(self, line: Mapping[str, Any]) -> None:
        self._buffer.append(fast_json.dumps(line).decode())
        if len(self._buffer) >= self._buffer_lines:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        lines = len(self._buffer)
        text = "\n".join(self._buffer) + "\n"
        self._buffer.clear()
        try:
            self._write(text)
        except OSError as error:
            self.dropped_lines += lines
            self._close_file()
            if not self._failing:
                logger.warning("prediction log %s: %s; dropping lines until a write succeeds", self.path, error)
            self._failing = True
            return
        self._failing = False

    def _write(self, text: str) -> None:
        if self._stream is not None:
            self._stream.write(text)
            self._stream.flush()
            return
        handle = self._open()
        handle.write(text)
        handle.flush()
        self._written += len(text.encode("utf-8"))
        if self._written >= self.max_bytes:
            self._rotate()

    def _open(self) -> TextIO:
        if self._file is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._written = self.path.stat().st_size
        return self._file

    def _close_file(self) -> None:
        if self._file is not None:
            # What it still held is already counted as dropped.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _rotate(self) -> None:
        assert self.path is not None
        if self._file is not None:
            self._file.close()
            self._file = None
        for index in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if index == self.backups:
                older.unlink(missing_ok=True)
                continue
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._written = 0

    def close(self) -> None:
        self.flush()
        self._close_file()


def open_prediction_log(environ: Mapping[str, str], home: Path) -> PredictionLog | None:
    """The log the environment asks for: a folder (default under `home`), '-' for stdout, or 'off' for none."""
    target = environ.get(LOG_ENV, "").strip()
    text = environ.get(SAMPLE_ENV, "").strip() or "1.0"
    try:
        sample = float(text)
    except ValueError:
        raise ValueError(f"{SAMPLE_ENV}: expected a share in [0, 1], got {text!r}") from None
    if target.lower() in ("off", "none", "0", "false"):
        return None
    if target == "-":
        return PredictionLog(None, stream=sys.stdout, sample=sample)
    folder = Path(target) if target else home / "predictions"
    return PredictionLog(folder, sample=sample)
