"""The drift watch's memory: the windows it measured (a small state file) and the actions it took (the audit log).

`$SCOREGATE_HOME/drift/state.json` keeps the last `MAX_WINDOWS` measured windows (per-feature PSI, score PSI,
decline rates), which the policy's hysteresis reads. It is rewritten whole through a temporary file and a rename,
under the drift watch's lock. Losing it is safe: the history restarts, which can only delay an action.

Past actions are NOT kept there: they are the `drift.decision` records of the hash-chained audit log whose action is
`retrain` or `rollback`. Cooldown and the retrain budget therefore cannot be reset by deleting a file, and an audit
log that does not verify stops the watch (fail closed) instead of being trusted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.audit import AuditRecord
from tasks.drift import DriftReport, UtcDatetime

__all__ = [
    "DECISION_ACTION",
    "MAX_WINDOWS",
    "OUTCOME_ACTION",
    "DriftState",
    "WindowRecord",
    "load_state",
    "past_actions",
    "record_window",
    "save_state",
    "state_path",
    "window_history",
]

DECISION_ACTION = "drift.decision"
OUTCOME_ACTION = "drift.action"
MAX_WINDOWS = 1000
# A window sharing more than this share of its time with a newer one measures the same traffic (see window_history).
MAX_SHARED_TIME = 0.5


class WindowRecord(BaseModel):
    """What the policy needs to know about one measured window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    model_version: str
    environment: str
    start: UtcDatetime
    end: UtcDatetime
    evaluated_at: UtcDatetime
    rows: int = Field(ge=0)
    feature_psi: dict[str, float]
    score_psi: float
    decline_rate_reference: float
    decline_rate_current: float

    @classmethod
    def from_report(cls, report: DriftReport) -> WindowRecord:
        return cls(
            model_name=report.model_name,
            model_version=report.model_version,
            environment=report.environment,
            start=report.window.start,
            end=report.window.end,
            evaluated_at=report.generated_at,
            rows=report.rows,
            feature_psi=report.feature_psi(),
            score_psi=report.score.psi,
            decline_rate_reference=report.score.decline_rate_reference,
            decline_rate_current=report.score.decline_rate_current,
        )

    def key(self) -> tuple[str, str, str, datetime, datetime]:
        return (self.model_name, self.environment, self.model_version, self.start, self.end)

    def policy_document(self) -> dict[str, Any]:
        """The window as the drift policy reads it (times in RFC 3339, UTC)."""
        return {
            "model_version": self.model_version,
            "start": _rfc3339(self.start),
            "end": _rfc3339(self.end),
            "rows": self.rows,
            "feature_psi": dict(self.feature_psi),
            "score_psi": self.score_psi,
            "decline_rate_reference": self.decline_rate_reference,
            "decline_rate_current": self.decline_rate_current,
        }


class DriftState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = "1"
    windows: list[WindowRecord] = Field(default_factory=list)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def state_path(home: Path) -> Path:
    return home / "drift" / "state.json"


def load_state(path: Path) -> tuple[DriftState, str | None]:
    """The state, or an empty one and a warning when the file is unreadable (it is moved aside, not deleted)."""
    if not path.exists():
        return DriftState(), None
    try:
        return DriftState.model_validate_json(path.read_bytes()), None
    except (OSError, ValidationError) as error:
        aside = path.with_name(f"{path.name}.unreadable-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
        path.rename(aside)
        first = str(error).splitlines()[0]
        return DriftState(), f"{path} was unreadable ({first}); moved to {aside.name}, the window history restarts"


def save_state(path: Path, state: DriftState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(state.model_dump_json(indent=1))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def record_window(state: DriftState, window: WindowRecord) -> DriftState:
    """The state with `window` added (replacing a measurement of the same window), oldest dropped beyond the cap."""
    kept = [existing for existing in state.windows if existing.key() != window.key()]
    kept.append(window)
    kept.sort(key=lambda record: (record.end, record.evaluated_at))
    return state.model_copy(update={"windows": kept[-MAX_WINDOWS:]})


def _overlap_share(first: tuple[float, float], second: tuple[float, float]) -> float:
    """The share of the shorter of two (start, end) spans, in seconds, that they have in common."""
    overlap = min(first[1], second[1]) - max(first[0], second[0])
    if overlap <= 0:
        return 0.0
    shorter = min(first[1] - first[0], second[1] - second[0])
    return 1.0 if shorter <= 0 else overlap / shorter


def window_history(state: DriftState, current: WindowRecord) -> list[WindowRecord]:
    """Earlier windows of the same model and environment (any version), oldest first, the current one excluded.

    Hysteresis counts windows as independent evidence, so a window that shares more than half of its time with the
    current one or with a newer kept one (the same hour watched again by hand, say) is not counted again: only the
    newest measurement of that stretch of traffic is. Scheduled windows that touch or overlap by seconds all count.
    """
    candidates = sorted(
        (
            window
            for window in state.windows
            if window.model_name == current.model_name
            and window.environment == current.environment
            and window.end <= current.end
            and window.key() != current.key()
        ),
        key=lambda record: (record.end, record.evaluated_at),
        reverse=True,
    )
    kept: list[WindowRecord] = []
    kept_spans = [(current.start.timestamp(), current.end.timestamp())]
    for window in candidates:
        span = (window.start.timestamp(), window.end.timestamp())
        if all(_overlap_share(span, newer) <= MAX_SHARED_TIME for newer in kept_spans):
            kept.append(window)
            kept_spans.append(span)
    return kept[::-1]


def past_actions(records: Sequence[AuditRecord], model_name: str, environment: str) -> list[dict[str, str]]:
    """The retrains and rollbacks the drift watch decided (dry runs aside) for this model and environment, oldest
    first."""
    return [
        {
            "at": _rfc3339(record.at),
            "action": record.details["action"],
            "model_version": record.model_version,
        }
        for record in records
        if record.action == DECISION_ACTION
        and record.model_name == model_name
        and record.environment == environment
        and record.details.get("action") in ("retrain", "rollback")
        and record.details.get("mode") != "dry-run"
    ]
