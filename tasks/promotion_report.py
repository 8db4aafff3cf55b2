"""The promotion report: the merge request's description, written for the engineer who approves it."""

from __future__ import annotations

from tasks.decision import Decision, DecisionBundle
from tasks.report import MetricValue

__all__ = ["render_promotion_report"]

_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "f1")


def _interval(metric: MetricValue | None) -> str:
    if metric is None:
        return "-"
    return f"{metric.value:.4f} [{metric.ci_low:.4f}, {metric.ci_high:.4f}]"


def render_promotion_report(
    bundle: DecisionBundle, decision: Decision, *, manifest_diff: str, branch: str | None, commit: str | None
) -> str:
    verdict = "ALLOWED" if decision.allow else "DENIED"
    champion = bundle.champion
    lines = [
        f"# Promote {bundle.model_name} v{bundle.candidate_version} to {bundle.environment}: {verdict}",
        "",
        f"Requested by **{bundle.requested_by}** at {bundle.requested_at.isoformat()}; approvals: "
        + (", ".join(a.by for a in bundle.approvals) or "none"),
        f"Policy digest `{decision.policy_digest[:16]}`, bundle `{decision.bundle_hash[:16]}`, "
        f"snapshot `{bundle.snapshot_hash[:16]}`.",
        "",
        "## Champion against challenger (same frozen snapshot, 95% bootstrap intervals)",
    ]
    if champion is None:
        lines.append("")
        lines.append("First promotion to this environment: no champion, gated on absolute floors only.")
    lines += [
        "",
        "| metric | challenger v"
        + bundle.candidate_version
        + " | champion "
        + (f"v{champion.version}" if champion else "-")
        + " | difference (paired) |",
        "|---|---|---|---|",
    ]
    for name in _METRICS:
        lines.append(
            f"| {name} | {_interval(bundle.candidate.metrics.get(name))} | "
            f"{_interval(champion.metrics.get(name) if champion else None)} | "
            f"{_interval(bundle.differences.get(name))} |"
        )
    if bundle.decision_flip_share is not None:
        lines += ["", f"Decisions that flip at the threshold: {bundle.decision_flip_share:.2%} of snapshot rows."]
    fairness = bundle.fairness
    lines += [
        "",
        f"## Fairness ({fairness.metric} by {fairness.segment_column or 'no segment'}; gap {fairness.gap:.4f})",
        "",
        *[f"- {segment}: {value:.4f}" for segment, value in fairness.per_segment.items()],
        "",
        "## Policy verdict",
        "",
    ]
    if decision.violations:
        lines += [f"- DENY `{v.rule}`: {v.message}" for v in decision.violations]
    else:
        lines.append("- every rule passed")
    lines += [f"- warning: {warning}" for warning in decision.warnings]
    lineage = bundle.lineage
    lines += [
        "",
        "## Lineage",
        "",
        f"- run `{lineage.run_id}`, data `{lineage.data_hash[:16]}`, feature spec `{lineage.feature_spec_hash[:16]}`",
        f"- code `{lineage.git_commit}`, lock `{lineage.lock_hash[:16]}`",
        f"- bento `{lineage.bento_tag}` `{lineage.bento_digest}`",
        "",
        "## Manifest change",
        "",
    ]
    if branch and commit:
        lines += [f"Branch `{branch}`, commit `{commit}`.", "", "```diff", manifest_diff.rstrip(), "```"]
    else:
        lines.append("Nothing was committed: the promotion was denied.")
    return "\n".join(lines) + "\n"
