"""The drift policy adapter: ask OPA what to do about a measured window, and fail closed when it cannot answer.

The question is `data.scoregate.drift.decision` (policies/drift.rego), asked of the in-process OPA engine over the
policy folder, or of an OPA server when `SCOREGATE_OPA_URL` is set (as for promotions). Any failure to get a
well-formed answer (policies that do not load or compile, an engine or server error, an undefined or malformed
result) becomes the action "none" with `error` set: no answer never retrains and never rolls back, and the caller
exits with an error so that someone looks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from tasks.decision import canonical_json
from tasks.drift import DriftReport
from tasks.drift_state import WindowRecord
from tasks.policy import OPA_URL_ENV
from tasks.policy_set import RULE_UNAVAILABLE, PolicyLoadError, build_engine, read_policy_set

__all__ = [
    "DRIFT_DOCUMENT",
    "DriftAction",
    "DriftDecision",
    "DriftReason",
    "decide_drift",
    "drift_policy_input",
]

DRIFT_DOCUMENT = "scoregate.drift.decision"
DriftAction = Literal["none", "retrain", "rollback"]


class DriftReason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: StrictStr
    message: StrictStr


class _Answer(BaseModel):
    """What the policy must evaluate to; anything else is a malformed answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: DriftAction
    reasons: list[DriftReason]


class DriftDecision(BaseModel):
    """The policy's answer (or the fail-closed "none" with `error`), tied to the policies and the input it saw."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: DriftAction
    reasons: list[DriftReason]
    policy_digest: str
    input_hash: str
    error: str | None = None

    def rules(self) -> list[str]:
        return [reason.rule for reason in self.reasons]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def drift_policy_input(
    report: DriftReport,
    history: Sequence[WindowRecord],
    actions: Sequence[Mapping[str, str]],
    *,
    rollback_available: bool,
    evaluated_at: datetime,
) -> dict[str, Any]:
    """The policy's input: the current window, the earlier ones (oldest first), past actions and the time."""
    return {
        "schema_version": "1",
        "evaluated_at": _rfc3339(evaluated_at),
        "model_name": report.model_name,
        "model_version": report.model_version,
        "environment": report.environment,
        "window": WindowRecord.from_report(report).policy_document(),
        "history": [window.policy_document() for window in history],
        "actions": [dict(action) for action in actions],
        "rollback_available": rollback_available,
        "most_drifted": list(report.most_drifted),
    }


def _failed(message: str, digest: str, input_hash: str) -> DriftDecision:
    return DriftDecision(
        action="none",
        reasons=[DriftReason(rule=RULE_UNAVAILABLE, message=message)],
        policy_digest=digest,
        input_hash=input_hash,
        error=message,
    )


def _from_answer(answer: object, digest: str, input_hash: str) -> DriftDecision:
    try:
        parsed = _Answer.model_validate(answer)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the answer"
        return _failed(f"the drift policy's answer is malformed ({where}: {first['msg']})", digest, input_hash)
    return DriftDecision(action=parsed.action, reasons=parsed.reasons, policy_digest=digest, input_hash=input_hash)


def _ask_server(url: str, document: Mapping[str, Any], timeout: float) -> object:
    """POST the input to /v1/data/scoregate/drift/decision and return `result`; raises on any failure."""
    from opa_client import OpaClient

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{OPA_URL_ENV}={url!r} is not an http(s) server root")
    client = OpaClient(
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        ssl=parts.scheme == "https",
        timeout=timeout,
        retries=1,
    )
    try:
        package, _, rule = DRIFT_DOCUMENT.rpartition(".")
        response = client.query_rule(input_data=dict(document), package_path=package.replace(".", "/"), rule_name=rule)
    finally:
        client.close_connection()
    if not isinstance(response, dict) or "result" not in response:
        raise LookupError(f"OPA at {url} returned no result for data.{DRIFT_DOCUMENT} (undefined)")
    return response["result"]


def decide_drift(
    policy_dir: Path,
    document: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> DriftDecision:
    """Evaluate the drift decision for one input; never raises for a policy or engine failure."""
    input_hash = hashlib.sha256(canonical_json(dict(document)).encode("utf-8")).hexdigest()
    env = os.environ if environ is None else environ
    try:
        policy_set = read_policy_set(policy_dir)
    except PolicyLoadError as error:
        if not env.get(OPA_URL_ENV, "").strip():
            return _failed(f"{error.rule}: {error.message}", "", input_hash)
        policy_set = None
    digest = policy_set.digest if policy_set is not None else ""
    url = env.get(OPA_URL_ENV, "").strip()
    if url:
        try:
            answer = _ask_server(url, document, timeout)
        except Exception as error:  # noqa: BLE001 - unreachable, timed out, HTTP error, undefined: all fail closed
            return _failed(f"OPA at {url} gave no drift decision: {type(error).__name__}: {error}", digest, input_hash)
        return _from_answer(answer, digest, input_hash)
    assert policy_set is not None
    try:
        engine = build_engine(policy_set)
    except PolicyLoadError as error:
        return _failed(f"{error.rule}: {error.message}", digest, input_hash)
    try:
        answer = engine.eval_document(DRIFT_DOCUMENT, dict(document))
    except Exception as error:  # noqa: BLE001 - any engine failure, undefined included, is no answer
        return _failed(f"drift policy evaluation failed: {error}", digest, input_hash)
    finally:
        engine.close()
    return _from_answer(answer, digest, input_hash)
