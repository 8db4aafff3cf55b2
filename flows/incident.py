"""`scoregate demo --incident`: the incident this project exists for, replayed end to end on one machine.

The story: a champion is live in production; upstream, one field silently changes its unit (amounts arrive in
cents, x100); nothing fails, the features and then the scores move. The replay:

1. trains two versions with the training flow (v1, then v2 on newer data) and bootstraps production's GitOps
   history with v1 then v2 (direct commits on the default branch, each audited as `bootstrap`: the promotion gate
   is skipped on purpose, since a small demo model would not pass production's floors), the `production` alias on
   v2, so that a rollback has somewhere to go;
2. warms an in-process online store with 60 days of earlier traffic and scores live traffic through the scorer's
   own engine (`bentos.engine.ScoringEngine`: record validation, the online store's histories, `OnlineFeatures`,
   the model's score, the prediction log, as `POST /score` does), in four phases:
   normal traffic; amounts in cents; amounts in cents again; amounts in cents after the drift policy's action.
   Records the scorer refuses (an amount over the schema's ceiling) are counted, as the scorer counts them;
3. runs the drift watch over each phase's scoring time and carries out what the drift policy decides.

What the policy decides is its own business; with the shipped data and the default model the normal phase needs
nothing, the first cents phase names `amount` (and `amount_sum_24h`, `amount_to_mean`, built from it) and waits for
the hysteresis, the second retrains (the training flow with v2's recorded configuration, then the promotion flow to
staging, whose gates still judge the new version), and the last is not acted on again (the cooldown holds, or its
now hard score shift starts its own hysteresis) while the report keeps naming the amount features: the cause is
upstream, and a person has to look. A hard score shift in two windows would have rolled production back to v1.
Run it in a fresh home (`scoregate --home DIR demo --incident`): a home with a drift history has its cooldown and
hysteresis already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from flows.monitoring import MonitoringOutcome, watch_drift
from flows.progress import stage
from flows.promotion import release_of
from tasks.audit import append_audit_record, read_audit_records, verify_audit_log
from tasks.drift_log import prediction_log_folder
from tasks.drift_state import DECISION_ACTION
from tasks.gitops_manifests import write_release
from tasks.gitops_repo import DEFAULT_BRANCH, commit_on_branch
from tasks.model import ScoringModel
from tasks.registry import VersionInfo, download_run_artifact, get_version, set_alias, version_for_alias
from tasks.settings import Settings

__all__ = ["IncidentError", "run_incident_demo"]

ENVIRONMENT = "production"
ACTOR = "scoregate-incident-demo"
TRAFFIC_SEED = 1001
TRAFFIC_START = datetime(2026, 4, 1)
TRAFFIC_DAYS = 90  # the generator's cards make ~40 transactions per 90 days whatever the row count: keep its density
WARM_UP_DAYS = 60
REQUEST_RECORDS = 200
CENTS = 100.0


class IncidentError(RuntimeError):
    """The replay cannot run here (a home that already has a drift history, a model without aggregates)."""


@dataclass(frozen=True)
class _Window:
    name: str
    frame: pl.DataFrame
    cents: bool


def _bootstrap_production(settings: Settings, versions: Sequence[VersionInfo]) -> None:
    """Each version becomes the production release in turn, on the default branch; the alias takes the last."""
    from flows.promotion import gitops_remote

    remote = gitops_remote(settings)
    for info in versions:
        release = release_of(info)
        result = commit_on_branch(
            remote,
            settings.home / "work",
            branch=DEFAULT_BRANCH,
            base=DEFAULT_BRANCH,
            message=f"Promote {info.model_name} v{info.version} to {ENVIRONMENT}\n\nincident demo bootstrap",
            change=lambda repo, release=release: write_release(repo, ENVIRONMENT, release),  # type: ignore[misc]
        )
        set_alias(settings, info.model_name, ENVIRONMENT, info.version)
        append_audit_record(
            settings.home / "audit" / "audit.jsonl",
            actor=ACTOR,
            action="bootstrap",
            environment=ENVIRONMENT,
            model_name=info.model_name,
            model_version=info.version,
            details={
                "reason": "incident demo: made the production release directly, without the promotion gate",
                "commit": result.commit,
            },
        )


def _load_model(settings: Settings, info: VersionInfo) -> tuple[ScoringModel, dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="incident-model-", dir=settings.home) as work:
        path = download_run_artifact(settings, info.run_id, "scoring_model.json", Path(work))
        expected = info.tags.get("scoregate.scoring_model_sha256") or None
        model = ScoringModel.load(path, expected_sha256=expected)
    manifest = {
        "model_name": info.model_name,
        "model_version": info.version,
        "run_id": info.run_id,
        "scoring_model_sha256": expected,
        "target_column": info.tags.get("scoregate.target_column", "is_fraud"),
    }
    return model, manifest


def _records(frame: pl.DataFrame, target: str, cents: bool) -> list[dict[str, Any]]:
    """Rows as a client sends them: no target, ISO timestamps; in cents after the upstream change."""
    body = frame.drop(target, strict=False).with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f"))
    if cents:
        body = body.with_columns(pl.col("amount") * CENTS)
    return body.to_dicts()


async def _score(engine: Any, records: list[dict[str, Any]]) -> tuple[int, int]:
    """Score in requests of REQUEST_RECORDS; a refused request is retried record by record. (scored, refused)."""
    from bentos.engine import InputRejected

    scored = refused = 0
    for start in range(0, len(records), REQUEST_RECORDS):
        batch = records[start : start + REQUEST_RECORDS]
        try:
            await engine.score(batch, engine.request_ids.next())
            scored += len(batch)
        except InputRejected:
            # A request is all or nothing; a client resending the valid records one by one is what remains.
            for record in batch:
                try:
                    await engine.score([record], engine.request_ids.next())
                    scored += 1
                except InputRejected:
                    refused += 1
    engine.log.flush()
    return scored, refused


def _summary(name: str, outcome: MonitoringOutcome, scored: int, refused: int) -> dict[str, Any]:
    return {
        "window": name,
        "model_version": outcome.model_version,
        "start": outcome.window_start.isoformat(),
        "end": outcome.window_end.isoformat(),
        "scored": scored,
        "refused": refused,
        "rows": outcome.rows,
        "score_psi": round(outcome.score_psi, 4),
        "decline_rate": round(outcome.decline_rate_current, 4),
        "decline_rate_training": round(outcome.decline_rate_reference, 4),
        "most_drifted": outcome.most_drifted,
        "feature_psi": {name: round(value, 4) for name, value in outcome.feature_psi.items()},
        "action": outcome.action,
        "rules": [reason.rule for reason in outcome.reasons],
        "reasons": [f"{reason.rule}: {reason.message}" for reason in outcome.reasons],
        "result": outcome.result.model_dump(mode="json"),
        "report": outcome.html_path,
        "audit_seq": outcome.audit_seq,
    }


def run_incident_demo(
    rows: int = 200_000, *, window_rows: int | None = None, policy_dir: Path | None = None
) -> dict[str, Any]:
    """Replay the cents incident in the current SCOREGATE_HOME and return what each drift watch saw and did."""
    import os

    from bentos.engine import ScoringEngine
    from flows.training import load_default_config, training_flow
    from tasks.entity_history import AggregatePlan
    from tasks.generator import generate_transactions
    from tasks.online_store import InProcessStore, backfill
    from tasks.prediction_log import PredictionLog

    settings = Settings.from_env()
    settings.ensure_dirs()
    audit_log = settings.home / "audit" / "audit.jsonl"
    if any(record.action == DECISION_ACTION for record in read_audit_records(audit_log)):
        raise IncidentError(
            f"{settings.home} already has a drift history (its cooldown would hold the replay back): "
            "run it in a fresh home, e.g. `scoregate --home /tmp/incident demo --incident`"
        )
    config = load_default_config()
    spec = config.spec
    if spec.aggregates is None or spec.timestamp is None:
        raise IncidentError("the replay needs the default card-fraud configuration (aggregates and a timestamp)")
    per_window = window_rows or max(1_000, rows // 20)

    stage("Training v1 (the earlier champion)")
    first = training_flow(config=config.model_dump(mode="json"), rows=rows)
    stage("Training v2 (the new champion, on newer data)")
    second = training_flow(
        config=config.model_copy(update={"seed": config.seed + 1}).model_dump(mode="json"), rows=rows
    )
    model_name = config.model_name
    v1 = get_version(settings, model_name, str(first["model_version"]))
    v2 = get_version(settings, model_name, str(second["model_version"]))
    stage("Making v2 the production champion (GitOps history v1 -> v2)")
    _bootstrap_production(settings, [v1, v2])

    stage("Generating traffic")
    # Three windows' worth of earlier traffic per live window keeps the cards' histories as full as in training.
    traffic = generate_transactions(12 * per_window, seed=TRAFFIC_SEED, days=TRAFFIC_DAYS, start=TRAFFIC_START)
    cut = TRAFFIC_START + timedelta(days=WARM_UP_DAYS)
    time_column = spec.timestamp.column
    warm = traffic.filter(pl.col(time_column) < cut)
    live = traffic.filter(pl.col(time_column) >= cut)
    size = -(-live.height // 4)
    windows = [
        _Window("normal traffic", live.slice(0, size), cents=False),
        _Window("amounts in cents", live.slice(size, size), cents=True),
        _Window("amounts in cents, again", live.slice(2 * size, size), cents=True),
        _Window("amounts in cents, after the policy's action", live.slice(3 * size, size), cents=True),
    ]
    store = InProcessStore(AggregatePlan.from_spec(spec.aggregates))
    log = PredictionLog(prediction_log_folder(os.environ, settings.home))
    asyncio.run(backfill(store, warm, spec))

    results: list[dict[str, Any]] = []
    engines: dict[str, Any] = {}
    try:
        for window in windows:
            champion = version_for_alias(settings, model_name, ENVIRONMENT)
            assert champion is not None  # set by the bootstrap; a rollback moves it, never deletes it
            if champion.version not in engines:
                model, manifest = _load_model(settings, champion)
                engines[champion.version] = ScoringEngine(model, manifest, store=store, log=log)
            stage(f"Scoring {window.name} with v{champion.version}")
            started = datetime.now(UTC)
            scored, refused = asyncio.run(
                _score(engines[champion.version], _records(window.frame, config.target.column, window.cents))
            )
            ended = datetime.now(UTC)
            # The window is exactly this phase's scoring time (a millisecond of margin on each side).
            span = (ended - started + timedelta(milliseconds=2)).total_seconds() / 3600
            stage(f"Drift watch after {window.name}")
            outcome = watch_drift(
                settings,
                model_name=model_name,
                environment=ENVIRONMENT,
                window_hours=span,
                window_end=ended + timedelta(milliseconds=1),
                policy_dir=policy_dir,
                retrain_rows=rows,
                actor=ACTOR,
            )
            results.append(_summary(window.name, outcome, scored, refused))
    finally:
        log.close()
    final = version_for_alias(settings, model_name, ENVIRONMENT)
    verification = verify_audit_log(audit_log)
    return {
        "home": str(settings.home),
        "model_name": model_name,
        "versions": {"earlier": v1.version, "champion": v2.version},
        "production_alias_after": final.version if final else None,
        "windows": results,
        "audit_records": verification.records,
        "audit_verified": verification.ok,
    }
