"""The promotion flow: evidence on a frozen snapshot -> DecisionBundle -> OPA -> audit -> GitOps branch and alias.

On allow, the environment's overlay is changed on a new branch `promote/<model>-v<N>-<env>` of the GitOps
repository and the MLflow alias `<env>-candidate` moves; the champion alias `<env>` moves only when the canary has
passed (`scoregate promote --finalize`). On deny nothing moves. Either way the decision is stored for replay, an
audit record is appended and a Markdown report says why. One promotion at a time per home (a file lock).
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from pydantic import BaseModel, ConfigDict

from flows.progress import stage
from flows.steps import step
from tasks.audit import append_audit_record, read_audit_records
from tasks.decision import Approval, Decision, DecisionBundle
from tasks.gitops_manifests import Release, write_release
from tasks.gitops_repo import (
    DEFAULT_BRANCH,
    CommitResult,
    commit_on_branch,
    delete_remote_branch,
    ensure_local_remote,
)
from tasks.ingest import file_sha256
from tasks.lineage import PROJECT_ROOT
from tasks.locks import exclusive_lock
from tasks.model import ScoringModel
from tasks.policy import engine_from_env
from tasks.policy_replay import store_decision
from tasks.promotion import PROMOTION_ACTION, build_bundle, gather_evidence, prior_promotions
from tasks.promotion_report import render_promotion_report
from tasks.registry import (
    VersionInfo,
    download_run_artifact,
    get_version,
    run_metrics,
    set_alias,
    version_for_alias,
)
from tasks.settings import Settings

__all__ = ["PromotionOutcome", "SnapshotMismatch", "gitops_remote", "promotion_flow", "release_of"]

POLICY_DIR = PROJECT_ROOT / "policies"
EVIDENCE_SEED = 20260101


class SnapshotMismatch(ValueError):
    """The stored evaluation snapshot is not the one the candidate's lineage recorded."""


class PromotionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: bool
    model_name: str
    model_version: str
    environment: str
    violations: list[dict[str, str]]
    warnings: list[str]
    report_path: str
    bundle_hash: str
    branch: str | None
    commit: str | None
    candidate_alias: str | None
    merge_request: str | None = None


def gitops_remote(settings: Settings) -> str:
    """The GitOps remote: `SCOREGATE_GITOPS_REMOTE`, or the bare repository under the home (created on first use)."""
    configured = os.environ.get("SCOREGATE_GITOPS_REMOTE")
    return configured or ensure_local_remote(settings.home / "gitops.git")


def _load_model(settings: Settings, info: VersionInfo, folder: Path) -> ScoringModel:
    path = download_run_artifact(settings, info.run_id, "scoring_model.json", folder)
    expected = info.tags.get("scoregate.scoring_model_sha256")
    return ScoringModel.load(path, expected_sha256=expected)


def _load_snapshot(settings: Settings, info: VersionInfo, folder: Path) -> tuple[pl.DataFrame, str]:
    path = download_run_artifact(settings, info.run_id, "snapshot/evaluation_snapshot.parquet", folder)
    digest = file_sha256(path)
    recorded = info.tags.get("scoregate.snapshot_hash", "")
    if digest != recorded:
        raise SnapshotMismatch(
            f"{info.model_name} v{info.version}: evaluation snapshot sha256 {digest[:16]} does not match the "
            f"recorded {recorded[:16] or '(none)'}"
        )
    return pl.read_parquet(path), digest


def release_of(info: VersionInfo) -> Release:
    """The overlay's release fields for a registered version, from the bento tags recorded on it."""
    bento_tag = info.tags.get("scoregate.bento_tag", "")
    return Release(
        model_name=info.model_name,
        model_version=info.version,
        bento_tag=bento_tag,
        image_tag=bento_tag.split(":", 1)[-1],
        bento_digest=f"sha256:{info.tags.get('scoregate.bento_digest', '')}",
    )


def _open_merge_request(branch: str, bundle: DecisionBundle, decision: Decision, diff: str, commit: str) -> str | None:
    """Open the merge request when GitLab is configured; its description is the promotion report."""
    from tasks.gitlab_mr import GitLabSettings, open_merge_request

    gitlab = GitLabSettings.from_env()
    if gitlab is None:
        return None
    from tasks.secrets import gitlab_token, secret_store

    with secret_store() as store:
        token = gitlab_token(store)
    return open_merge_request(
        gitlab,
        token,
        source_branch=branch,
        title=f"Promote {bundle.model_name} v{bundle.candidate_version} to {bundle.environment}",
        description=render_promotion_report(bundle, decision, manifest_diff=diff, branch=branch, commit=commit),
    )


def _decide(bundle: DecisionBundle, policy_dir: Path) -> Decision:
    with engine_from_env(policy_dir) as engine:
        return engine.decide(bundle)


decide_task = step(_decide, "ask-opa")
evidence_task = step(gather_evidence, "score-candidate-and-champion")
commit_task = step(commit_on_branch, "commit-to-gitops-branch", retries=1)


@flow(name="scoregate-promotion", validate_parameters=True)
def promotion_flow(
    model_name: str,
    model_version: str,
    environment: str,
    requested_by: str | None = None,
    approvals: list[str] | None = None,
    policy_dir: str | None = None,
) -> dict[str, Any]:
    settings = Settings.from_env()
    settings.ensure_dirs()
    timeout = float(os.environ.get("SCOREGATE_LOCK_TIMEOUT_SECONDS", "60"))
    with exclusive_lock(settings.home / "locks" / "promotion.lock", timeout_seconds=timeout, purpose="promotion"):
        outcome = _promote(
            settings,
            model_name,
            model_version,
            environment,
            requested_by or getpass.getuser(),
            approvals or [],
            Path(policy_dir) if policy_dir else POLICY_DIR,
        )
    return outcome.model_dump(mode="json")


def _promote(
    settings: Settings,
    model_name: str,
    model_version: str,
    environment: str,
    requested_by: str,
    approvers: list[str],
    policy_dir: Path,
) -> PromotionOutcome:
    now = datetime.now(UTC)
    work = settings.home / "promotions" / f"{model_name}-v{model_version}-{environment}-{now:%Y%m%dT%H%M%S%f}"
    stage("Loading candidate and champion")
    candidate = get_version(settings, model_name, model_version)
    champion = version_for_alias(settings, model_name, environment)
    snapshot, snapshot_hash = _load_snapshot(settings, candidate, work / "candidate")
    candidate_model = _load_model(settings, candidate, work / "candidate")
    champion_pair = None
    if champion is not None:
        champion_pair = (champion, _load_model(settings, champion, work / "champion"))
    stage("Scoring on the frozen snapshot")
    segment_column = candidate.tags.get("scoregate.fairness_segment") or None
    evidence = evidence_task(
        (candidate, candidate_model),
        champion_pair,
        snapshot,
        segment_column=segment_column,
        min_positives=int(candidate.tags.get("scoregate.fairness_min_positives", "50")),
        resamples=200,
        seed=EVIDENCE_SEED,
    )
    audit_log = settings.home / "audit" / "audit.jsonl"
    bundle = build_bundle(
        candidate=candidate,
        evidence=evidence,
        environment=environment,
        requested_by=requested_by,
        requested_at=now,
        approvals=[Approval(by=name, at=now) for name in approvers],
        metrics=run_metrics(settings, candidate.run_id),
        history=prior_promotions(read_audit_records(audit_log), model_name),
        snapshot_hash=snapshot_hash,
    )
    stage("Asking the policy")
    decision = decide_task(bundle, policy_dir)
    store_decision(settings.home / "decisions", bundle, decision, decided_at=now)
    branch = commit = alias = None
    diff = ""
    details = {"violations": ",".join(sorted(decision.violation_rules()))}
    if decision.allow:
        stage("Committing to the GitOps repository")
        release = release_of(candidate)
        branch = f"promote/{model_name}-v{model_version}-{environment}"
        result: CommitResult | None = None
        try:
            result = commit_task(
                gitops_remote(settings),
                settings.home / "work",
                branch=branch,
                base=DEFAULT_BRANCH,
                message=(
                    f"Promote {model_name} v{model_version} to {environment}\n\n"
                    f"bento {release.bento_tag} ({release.bento_digest})\npolicy {decision.policy_digest}\n"
                    f"bundle {decision.bundle_hash}\nrequested by {requested_by}"
                ),
                change=lambda repo: write_release(repo, environment, release),
            )
            merge_request = _open_merge_request(branch, bundle, decision, result.diff, result.commit)
            alias = f"{environment}-candidate"
            set_alias(settings, model_name, alias, model_version)
        except BaseException as error:
            if result is not None and result.created_branch:
                # The branch is useless without its merge request or alias: remove it so nothing is half-done.
                delete_remote_branch(gitops_remote(settings), settings.home / "work", branch)
            append_audit_record(
                audit_log,
                actor=requested_by,
                action="promotion.failed",
                environment=environment,
                model_name=model_name,
                model_version=model_version,
                bundle_hash=decision.bundle_hash,
                policy_digest=decision.policy_digest,
                decision="allow",
                details={
                    "error": str(error)[:500],
                    "alias_moved": "no",
                    "branch_removed": str(result is not None and result.created_branch),
                },
            )
            raise
        commit, diff = result.commit, result.diff
        details.update({"branch": branch, "commit": commit, "alias": alias, "merge_request": merge_request or ""})
    append_audit_record(
        audit_log,
        actor=requested_by,
        action=PROMOTION_ACTION,
        environment=environment,
        model_name=model_name,
        model_version=model_version,
        bundle_hash=decision.bundle_hash,
        policy_digest=decision.policy_digest,
        decision="allow" if decision.allow else "deny",
        details=details,
    )
    report = render_promotion_report(bundle, decision, manifest_diff=diff, branch=branch, commit=commit)
    report_path = work / "promotion-report.md"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report, encoding="utf-8")
    return PromotionOutcome(
        allow=decision.allow,
        model_name=model_name,
        model_version=model_version,
        environment=environment,
        violations=[v.model_dump() for v in decision.violations],
        warnings=decision.warnings,
        report_path=str(report_path),
        bundle_hash=decision.bundle_hash,
        branch=branch,
        commit=commit,
        candidate_alias=alias,
        merge_request=details.get("merge_request") or None,
    )
