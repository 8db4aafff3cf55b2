"""The drift watch: the champion's prediction log against its training data -> DriftReport -> OPA -> audit -> action.

One watch looks at one window of scoring times (by default the hour before now) of the champion (the MLflow alias
`<environment>`):

1. the reference: a sampled profile of the champion's training split, cached per version under
   `$SCOREGATE_HOME/drift/reference/` and rebuilt from the MLflow run when missing (`tasks.drift_reference`);
2. the window: the scorer's prediction log lines of that version whose `time` falls in the window
   (`tasks.drift_log`; malformed lines are skipped and counted);
3. the report: PSI per feature and on the score, Evidently's data-drift preset and score drift, the HTML report
   under `$SCOREGATE_HOME/drift/reports/` and in a monitoring run of the MLflow experiment (`tasks.drift`);
4. the decision: `data.scoregate.drift.decision` over the window, the earlier windows (`drift/state.json`) and the
   actions already taken (the audit log), audited as `drift.decision` and stored under `drift/decisions/`;
5. the action: `rollback` runs the rollback flow; `retrain` runs the training flow with the champion's recorded
   training configuration and then the promotion flow of the new version to staging (the gates still apply).
   Its outcome is audited as `drift.action`.

Steps 1-4 hold a lock (`locks/drift.lock`), so two watches of one home never interleave: the second waits up to
SCOREGATE_LOCK_TIMEOUT_SECONDS (default 60) and then stops with a message naming the holder. The action runs after
the lock is released; the audited decision already stops a second watch from acting again (cooldown).

Fail closed: no policy answer gives the action "none", is audited with the error, and the watch ends in an error.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict

from flows.progress import stage
from tasks.audit import append_audit_record, read_audit_records
from tasks.drift import DriftError, DriftReport, DriftSettings, DriftWindow, build_drift_report
from tasks.drift_log import DECISION_COLUMN, prediction_log_folder, read_prediction_window
from tasks.drift_policy import DriftAction, DriftDecision, DriftReason, decide_drift, drift_policy_input
from tasks.drift_reference import DEFAULT_MAX_ROWS, load_reference
from tasks.drift_state import (
    DECISION_ACTION,
    OUTCOME_ACTION,
    WindowRecord,
    load_state,
    past_actions,
    record_window,
    save_state,
    state_path,
    window_history,
)
from tasks.lineage import PROJECT_ROOT
from tasks.locks import exclusive_lock
from tasks.messages import first_line
from tasks.registry import VersionInfo, download_run_artifact, version_for_alias
from tasks.settings import Settings

__all__ = [
    "ActionResult",
    "DriftWatchFailed",
    "MonitoringOutcome",
    "NoChampion",
    "NoPredictions",
    "monitor_command",
    "monitoring_flow",
    "watch_drift",
]

DEFAULT_MODEL = "scoregate-fraud"
WATCH_ACTOR = "scoregate-drift-watch"
POLICY_DIR = PROJECT_ROOT / "policies"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DATA, EXIT_POLICY = 0, 1, 2, 3, 4


class NoChampion(DriftError):
    """The model has no alias for the environment: there is nothing to watch."""


class NoPredictions(DriftError):
    """The window holds no prediction-log line of the champion: nothing to measure, no decision."""


class DriftWatchFailed(RuntimeError):
    """The watch ran but ended badly (no policy answer, or the decided action failed); the audit says what."""


class ActionResult(BaseModel):
    """What became of the decided action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["none", "done", "failed", "not-run"]
    detail: str = ""
    new_version: str | None = None
    promotion_allowed: bool | None = None
    rolled_back_to: str | None = None


class MonitoringOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    model_version: str
    environment: str
    window_start: datetime
    window_end: datetime
    rows: int
    malformed_lines: int
    action: DriftAction
    reasons: list[DriftReason]
    policy_error: str | None
    policy_digest: str
    most_drifted: list[str]
    feature_psi: dict[str, float]
    score_psi: float
    decline_rate_reference: float
    decline_rate_current: float
    drifted_share: float
    report_path: str
    html_path: str
    mlflow_run_id: str
    reference_rebuilt: bool
    audit_seq: int
    result: ActionResult
    warnings: list[str]
    seconds: dict[str, float]


def _timeout(value: float | None) -> float:
    return value if value is not None else float(os.environ.get("SCOREGATE_LOCK_TIMEOUT_SECONDS", "60"))


def _rollback_available(settings: Settings, environment: str, version: str) -> tuple[bool, str | None]:
    """Whether the GitOps history has a promotion of `version` in force with an earlier release before it."""
    from flows.promotion import gitops_remote
    from tasks.gitops_history import last_promotion, release_history
    from tasks.gitops_repo import DEFAULT_BRANCH, GitError, working_copy

    try:
        with working_copy(gitops_remote(settings), settings.home / "work") as repo:
            changes = release_history(repo, environment, f"origin/{DEFAULT_BRANCH}")
    except (GitError, OSError) as error:
        return False, f"the GitOps history could not be read, so no rollback is offered: {error}"
    found = last_promotion(changes)
    if found is None or found[0].release is None or found[1].release is None:
        return False, None
    if found[0].release.model_version != version:
        live = found[0].release.model_version
        return False, f"GitOps runs v{live} in {environment}, not the champion v{version}: no rollback is offered"
    return True, None


@dataclass(frozen=True)
class _Measured:
    """Everything decided under the lock, before any action runs."""

    champion: VersionInfo
    report: DriftReport
    decision: DriftDecision
    report_path: Path
    html_path: Path
    mlflow_run_id: str
    reference_rebuilt: bool
    audit_seq: int
    warnings: list[str]
    seconds: dict[str, float]


def _measure_and_decide(
    settings: Settings,
    *,
    model_name: str,
    environment: str,
    window: DriftWindow,
    policy_dir: Path,
    actor: str,
    drift: DriftSettings,
    reference_rows: int,
    environ: Mapping[str, str],
    act: bool,
) -> _Measured:
    seconds: dict[str, float] = {}
    warnings: list[str] = []
    started = time.perf_counter()
    stage("Finding the champion")
    champion = version_for_alias(settings, model_name, environment)
    if champion is None:
        raise NoChampion(f"model {model_name!r} has no {environment!r} alias: there is no champion to watch")
    folder = prediction_log_folder(environ, settings.home)

    stage("Loading the reference profile")
    mark = time.perf_counter()
    profile, reference, rebuilt = load_reference(settings, champion, max_rows=reference_rows, drift=drift)
    seconds["reference"] = time.perf_counter() - mark

    stage("Reading the prediction log")
    mark = time.perf_counter()
    if not folder.is_dir():
        raise NoPredictions(
            f"no prediction log folder at {folder}: the scorer has not written one (SCOREGATE_PREDICTION_LOG); "
            "no decision was made"
        )
    current, stats = read_prediction_window(
        folder, model_name=model_name, model_version=champion.version, window=window, kinds=profile.kinds()
    )
    seconds["read_log"] = time.perf_counter() - mark
    if current.height == 0:
        raise NoPredictions(
            f"no prediction-log lines of {model_name} v{champion.version} between {window.start.isoformat()} and "
            f"{window.end.isoformat()} in {folder} ({stats.files} file(s), {stats.lines} line(s): {stats.malformed} "
            f"malformed, {stats.other_model} of another model or version, {stats.outside_window} outside the window); "
            "no decision was made"
        )
    if stats.malformed:
        warnings.append(f"{stats.malformed} malformed prediction-log line(s) skipped")

    stage("Measuring drift")
    reports_dir = settings.home / "drift" / "reports"
    # Microseconds in the name: two short windows (the incident replay's) may start in the same second.
    stem = f"{model_name}-v{champion.version}-{environment}-{window.start:%Y%m%dT%H%M%S%f}-{window.end:%Y%m%dT%H%M%S%f}"
    html_path = reports_dir / f"{stem}.html"
    decisions = current[DECISION_COLUMN]
    report = build_drift_report(
        reference=reference,
        current=current.drop(DECISION_COLUMN),
        kinds=profile.kinds(),
        bins=profile.bins,
        threshold=profile.threshold,
        decline_rate_current=float((decisions == "decline").mean() or 0.0),  # type: ignore[arg-type]
        model_name=model_name,
        model_version=champion.version,
        environment=environment,
        window=window,
        reference_info=profile.info(settings.home / "drift" / "reference" / model_name / f"v{champion.version}"),
        log=stats,
        settings=drift,
        html_path=html_path,
    )
    seconds["psi"], seconds["evidently"] = report.seconds_psi, report.seconds_evidently
    if report.evidently_error:
        warnings.append(f"Evidently failed, PSI still decided: {report.evidently_error}")
    report_path = reports_dir / f"{stem}.json"
    report_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")

    stage("Asking the drift policy")
    path = state_path(settings.home)
    state, problem = load_state(path)
    if problem:
        warnings.append(problem)
    audit_log = settings.home / "audit" / "audit.jsonl"
    # An audit log that does not verify raises here: the cooldown and budget cannot be trusted, so no decision.
    actions = past_actions(read_audit_records(audit_log), model_name, environment)
    record = WindowRecord.from_report(report)
    available, note = _rollback_available(settings, environment, champion.version)
    if note:
        warnings.append(note)
    now = datetime.now(UTC)
    document = drift_policy_input(
        report, window_history(state, record), actions, rollback_available=available, evaluated_at=now
    )
    decision = decide_drift(policy_dir, document, environ=environ)
    if act:
        # A dry run looks without leaving evidence: its window would otherwise count towards the hysteresis of the
        # watches that act.
        save_state(path, record_window(state, record))
    decided = settings.home / "drift" / "decisions" / f"{now:%Y%m%dT%H%M%S%f}-{decision.input_hash[:12]}.json"
    decided.parent.mkdir(parents=True, exist_ok=True)
    decided.write_text(
        json.dumps({"input": document, "decision": decision.model_dump(mode="json")}, indent=1, sort_keys=True),
        encoding="utf-8",
    )

    stage("Recording the watch")
    run_id = _log_run(settings, report, decision, {"report": html_path, "json": report_path}, warnings)
    entry = append_audit_record(
        audit_log,
        actor=actor,
        action=DECISION_ACTION,
        environment=environment,
        model_name=model_name,
        model_version=champion.version,
        bundle_hash=decision.input_hash,
        policy_digest=decision.policy_digest,
        details={
            "action": decision.action,
            # A dry run's decision is recorded but is no action: it starts no cooldown and spends no budget.
            "mode": "act" if act else "dry-run",
            "rules": ",".join(sorted(set(decision.rules()))),
            "error": (decision.error or "")[:500],
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "rows": str(report.rows),
            "score_psi": f"{report.score.psi:.6g}",
            "most_drifted": ",".join(report.most_drifted),
            "report": str(report_path),
            "mlflow_run_id": run_id,
        },
        at=now,
    )
    seconds["total"] = time.perf_counter() - started
    return _Measured(
        champion=champion,
        report=report,
        decision=decision,
        report_path=report_path,
        html_path=html_path,
        mlflow_run_id=run_id,
        reference_rebuilt=rebuilt,
        audit_seq=entry.seq,
        warnings=warnings,
        seconds=seconds,
    )


def _log_run(
    settings: Settings, report: DriftReport, decision: DriftDecision, files: dict[str, Path], warnings: list[str]
) -> str:
    """The MLflow monitoring run; a tracking store that fails is a warning, never a lost decision."""
    from tasks.drift_mlflow import log_monitoring_run

    try:
        return log_monitoring_run(
            settings,
            report,
            files,
            tags={"scoregate.drift_action": decision.action, "scoregate.policy_digest": decision.policy_digest},
        )
    except Exception as error:  # noqa: BLE001 - the decision must still be audited and carried out
        warnings.append(f"the MLflow monitoring run could not be logged: {type(error).__name__}: {error}")
        return ""


def _retrain(settings: Settings, champion: VersionInfo, rows: int, actor: str) -> ActionResult:
    """The training flow with the champion's recorded configuration, then its promotion to staging."""
    from flows.promotion import promotion_flow
    from flows.training import training_flow

    with tempfile.TemporaryDirectory(prefix="retrain-", dir=settings.home) as work:
        path = download_run_artifact(settings, champion.run_id, "training_config.json", Path(work))
        config = json.loads(path.read_text(encoding="utf-8"))
    stage("Retraining")
    summary = training_flow(config=config, rows=rows)
    version = str(summary["model_version"])
    stage("Promoting the retrained version to staging")
    try:
        outcome = promotion_flow(
            model_name=champion.model_name, model_version=version, environment="staging", requested_by=actor
        )
    except Exception as error:  # noqa: BLE001 - half done: say which version exists and what did not happen
        message = first_line(error, default="")
        return ActionResult(
            status="failed",
            detail=(
                f"retrained v{version} from v{champion.version}'s configuration (registered, bento built), but its "
                f"staging promotion failed: {type(error).__name__}: {message}; promote it with "
                f"`scoregate promote --model-version {version} --env staging`"
            ),
            new_version=version,
        )
    allowed = bool(outcome["allow"])
    verdict = "allowed" if allowed else "denied (" + ", ".join(v["rule"] for v in outcome["violations"]) + ")"
    return ActionResult(
        status="done",
        detail=f"retrained v{version} from v{champion.version}'s configuration; staging promotion {verdict}",
        new_version=version,
        promotion_allowed=allowed,
    )


def _rollback(environment: str, report: DriftReport, decision: DriftDecision, actor: str) -> ActionResult:
    from flows.rollback import rollback_flow

    stage("Rolling back")
    reason = (
        f"drift watch: {', '.join(sorted(set(decision.rules())))}; score PSI {report.score.psi:.3g}; "
        f"most drifted {', '.join(report.most_drifted) or '-'}; window {report.window.start:%Y-%m-%d %H:%M}-"
        f"{report.window.end:%H:%M} UTC"
    )
    outcome = rollback_flow(environment=environment, reason=reason, actor=actor, expected_version=report.model_version)
    return ActionResult(
        status="done",
        detail=(
            f"rolled back {environment} from v{outcome['from_version']} to v{outcome['to_version']}: reverted "
            f"{outcome['reverted_commit'][:12]} on {outcome['branch']}"
        ),
        rolled_back_to=str(outcome["to_version"]),
    )


def _carry_out(settings: Settings, measured: _Measured, retrain_rows: int, actor: str) -> ActionResult:
    decision, report = measured.decision, measured.report
    try:
        if decision.action == "rollback":
            result = _rollback(report.environment, report, decision, actor)
        else:
            result = _retrain(settings, measured.champion, retrain_rows, actor)
    except Exception as error:  # noqa: BLE001 - the failure is audited and reported, never swallowed
        message = first_line(error, default="")
        result = ActionResult(status="failed", detail=f"{decision.action} failed: {type(error).__name__}: {message}")
    append_audit_record(
        settings.home / "audit" / "audit.jsonl",
        actor=actor,
        action=OUTCOME_ACTION,
        environment=report.environment,
        model_name=report.model_name,
        model_version=report.model_version,
        bundle_hash=decision.input_hash,
        policy_digest=decision.policy_digest,
        details={
            "action": decision.action,
            "status": result.status,
            "detail": result.detail[:1000],
            "decision_seq": str(measured.audit_seq),
            **({"new_version": result.new_version} if result.new_version else {}),
            **({"rolled_back_to": result.rolled_back_to} if result.rolled_back_to else {}),
        },
    )
    return result


# Rules with which the drift policy says it could not judge (its data or the evidence is unusable): the answer is
# "none", correctly, but the watch is then blind, so it ends as a failure for someone to look at.
_CANNOT_JUDGE = ("config.invalid", "input.invalid")


def _unusable_policy_answer(decision: DriftDecision) -> str | None:
    messages = [reason.message for reason in decision.reasons if reason.rule in _CANNOT_JUDGE]
    return "; ".join(messages) or None


def watch_drift(
    settings: Settings,
    *,
    model_name: str = DEFAULT_MODEL,
    environment: str = "production",
    window_hours: float = 1.0,
    window_end: datetime | None = None,
    policy_dir: Path | None = None,
    act: bool = True,
    retrain_rows: int = 200_000,
    actor: str = WATCH_ACTOR,
    lock_timeout_seconds: float | None = None,
    drift: DriftSettings | None = None,
    reference_rows: int = DEFAULT_MAX_ROWS,
    environ: Mapping[str, str] | None = None,
) -> MonitoringOutcome:
    """One drift watch of the `environment` champion over [window_end - window_hours, window_end); no Prefect run.

    Raises `DriftError` (no champion, no reference, no predictions in the window: nothing was decided),
    `LockTimeout` (another watch holds the lock) and `AuditLogError` (the audit log does not verify). A policy
    without an answer does not raise: the outcome carries `policy_error` and the action "none".
    """
    end = window_end or datetime.now(UTC)
    if end.tzinfo is None:
        raise ValueError(f"window_end must carry a time zone, got {end.isoformat()}")
    window = DriftWindow.ending(end, window_hours)
    settings.ensure_dirs()
    with exclusive_lock(
        settings.home / "locks" / "drift.lock", timeout_seconds=_timeout(lock_timeout_seconds), purpose="drift watch"
    ):
        measured = _measure_and_decide(
            settings,
            model_name=model_name,
            environment=environment,
            window=window,
            policy_dir=policy_dir or POLICY_DIR,
            actor=actor,
            drift=drift or DriftSettings(),
            reference_rows=reference_rows,
            environ=os.environ if environ is None else environ,
            act=act,
        )
    decision, report = measured.decision, measured.report
    if decision.action == "none":
        result = ActionResult(status="none")
    elif not act:
        result = ActionResult(status="not-run", detail=f"{decision.action} decided; not carried out (dry run)")
    else:
        result = _carry_out(settings, measured, retrain_rows, actor)
    return MonitoringOutcome(
        model_name=model_name,
        model_version=report.model_version,
        environment=environment,
        window_start=window.start,
        window_end=window.end,
        rows=report.rows,
        malformed_lines=report.log.malformed,
        action=decision.action,
        reasons=decision.reasons,
        policy_error=decision.error or _unusable_policy_answer(decision),
        policy_digest=decision.policy_digest,
        most_drifted=report.most_drifted,
        feature_psi=report.feature_psi(),
        score_psi=report.score.psi,
        decline_rate_reference=report.score.decline_rate_reference,
        decline_rate_current=report.score.decline_rate_current,
        drifted_share=report.drifted_share,
        report_path=str(measured.report_path),
        html_path=str(measured.html_path),
        mlflow_run_id=measured.mlflow_run_id,
        reference_rebuilt=measured.reference_rebuilt,
        audit_seq=measured.audit_seq,
        result=result,
        warnings=measured.warnings,
        seconds=measured.seconds,
    )


@flow(name="scoregate-monitoring", validate_parameters=True)
def monitoring_flow(
    model_name: str = DEFAULT_MODEL,
    environment: str = "production",
    window_hours: float = 1.0,
    window_end: str | None = None,
    policy_dir: str | None = None,
    act: bool = True,
    retrain_rows: int = 200_000,
) -> dict[str, Any]:
    """The scheduled drift watch; ends Failed when the policy gave no answer or the decided action failed."""
    settings = Settings.from_env()
    outcome = watch_drift(
        settings,
        model_name=model_name,
        environment=environment,
        window_hours=window_hours,
        window_end=datetime.fromisoformat(window_end) if window_end else None,
        policy_dir=Path(policy_dir) if policy_dir else None,
        act=act,
        retrain_rows=retrain_rows,
    )
    if outcome.policy_error:
        raise DriftWatchFailed(f"the drift policy gave no answer, nothing was done: {outcome.policy_error}")
    if outcome.result.status == "failed":
        raise DriftWatchFailed(outcome.result.detail)
    return outcome.model_dump(mode="json")


# --- the command line ----------------------------------------------------------------------------------------


def _print(outcome: MonitoringOutcome) -> None:
    print(
        f"Drift watch of {outcome.model_name} v{outcome.model_version} ({outcome.environment}), "
        f"{outcome.window_start:%Y-%m-%d %H:%M:%S} - {outcome.window_end:%Y-%m-%d %H:%M:%S} UTC: "
        f"{outcome.rows} rows"
    )
    print(
        f"  score PSI {outcome.score_psi:.3f}; decline rate {100 * outcome.decline_rate_current:.2f}% "
        f"(training {100 * outcome.decline_rate_reference:.2f}%); Evidently drifted share {outcome.drifted_share:.0%}"
    )
    top = sorted(outcome.feature_psi.items(), key=lambda item: -item[1])[:5]
    print(
        "  most drifted "
        + (", ".join(f"{name} {value:.3f}" for name, value in top if name in outcome.most_drifted) or "none")
    )
    print(f"  action {outcome.action}")
    for reason in outcome.reasons:
        print(f"    {reason.rule}: {reason.message}")
    if outcome.result.detail:
        print(f"  result {outcome.result.status}: {outcome.result.detail}")
    for warning in outcome.warnings:
        print(f"  warn  {warning}")
    print(f"  report {outcome.html_path}")
    print(f"  audit  seq {outcome.audit_seq}; MLflow run {outcome.mlflow_run_id or '(not logged)'}")


def monitor_command(
    *,
    model_name: str = DEFAULT_MODEL,
    environment: str = "production",
    window_hours: float = 1.0,
    window_end: str | None = None,
    policy_dir: Path | None = None,
    act: bool = True,
    retrain_rows: int = 200_000,
    as_json: bool = False,
) -> int:
    """`scoregate monitor`: one watch, printed; the exit code says how it ended.

    0 a decision was made (and carried out), 2 bad arguments or no champion alias, 3 nothing to measure (no
    predictions in the window, no reference), 4 the policy gave no answer (action none), 1 the decided action
    failed, another watch held the lock, or the audit log does not verify.
    """
    import sys

    from tasks.audit import AuditLogError
    from tasks.locks import LockTimeout

    settings = Settings.from_env()
    try:
        end = datetime.fromisoformat(window_end) if window_end else None
        if end is not None and end.tzinfo is None:
            end = end.replace(tzinfo=UTC)  # a time without an offset is read as UTC, like every time in the logs
        DriftWindow.ending(end or datetime.now(UTC), window_hours)
    except ValueError as error:
        print(f"scoregate: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = watch_drift(
            settings,
            model_name=model_name,
            environment=environment,
            window_hours=window_hours,
            window_end=end,
            policy_dir=policy_dir,
            act=act,
            retrain_rows=retrain_rows,
            actor=f"{WATCH_ACTOR} ({getpass.getuser()})",
        )
    except NoChampion as error:
        print(f"scoregate: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DriftError as error:
        print(f"scoregate: data error: {error}", file=sys.stderr)
        return EXIT_DATA
    except (LockTimeout, AuditLogError) as error:
        print(f"scoregate: {error}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps(outcome.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        _print(outcome)
    if outcome.policy_error:
        print(f"scoregate: the drift policy gave no answer, nothing was done: {outcome.policy_error}", file=sys.stderr)
        return EXIT_POLICY
    if outcome.result.status == "failed":
        print(f"scoregate: {outcome.result.detail}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
