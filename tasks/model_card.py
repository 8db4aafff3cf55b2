"""The model card: a Markdown page a reviewer reads before approving a promotion."""

from __future__ import annotations

from tasks.ingest import IngestReport
from tasks.lineage import Lineage
from tasks.model import ScoringModel
from tasks.report import EvaluationReport

__all__ = ["render_model_card"]


def _metric_rows(report: EvaluationReport) -> list[str]:
    rows = ["| metric | value | 95% interval |", "|---|---:|---|"]
    for name, metric in report.metrics.items():
        rows.append(f"| {name} | {metric.value:.4f} | [{metric.ci_low:.4f}, {metric.ci_high:.4f}] |")
    return rows


def render_model_card(
    model: ScoringModel,
    report: EvaluationReport,
    ingest: IngestReport,
    lineage: Lineage,
    *,
    split_sizes: dict[str, int],
    split_method: str,
) -> str:
    c_text = "unpenalised (C = inf)" if model.regularisation_c is None else f"C = {model.regularisation_c:g}"
    lines = [
        f"# Model card: {model.model_name}",
        "",
        "Logistic regression (scikit-learn lbfgs) scored as sigmoid(x . w + b) by the ScoringModel that both batch",
        "scoring and the serving bento load.",
        "",
        "## Decision",
        f"- threshold: **{model.threshold:.6f}** ({model.threshold_method}, chosen on the validation split)",
        f"- regularisation: {c_text}",
        f"- trained at: {model.trained_at.isoformat()}",
        "",
        "## Data",
        f"- source: `{ingest.source}` (sha256 `{ingest.data_hash}`)",
        f"- rows read {ingest.rows_read}, rejected {ingest.rows_rejected} ({ingest.rejected_share:.3%})",
        f"- split by {split_method}: " + ", ".join(f"{name} {size}" for name, size in split_sizes.items()),
        "",
        f"## Test metrics ({report.rows} rows, {report.positives} positive; "
        f"{report.bootstrap_resamples} bootstrap resamples, seed {report.bootstrap_seed})",
        *_metric_rows(report),
        "",
        f"Confusion at the threshold: TP {report.confusion.true_positive}, FP {report.confusion.false_positive}, "
        f"TN {report.confusion.true_negative}, FN {report.confusion.false_negative}.",
        "",
        "## Segments",
        "| segment | rows | positives | roc_auc | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for segment in report.segments:
        auc = segment.metrics.get("roc_auc")
        recall = segment.metrics.get("recall")
        lines.append(
            f"| {segment.column}={segment.value} | {segment.rows} | {segment.positives} | "
            f"{auc.value if auc else float('nan'):.4f} | {recall.value if recall else float('nan'):.4f} |"
        )
    lines += [
        "",
        "## Coefficients",
        "`raw` is per unit of the feature before standardisation (after log and clipping where configured);",
        "`odds_ratio` = exp(raw). Categorical levels are against the reference level.",
        "",
        "| feature | raw | standardized | odds ratio |",
        "|---|---:|---:|---:|",
    ]
    for coefficient in model.coefficient_table():
        lines.append(
            f"| {coefficient.feature} | {coefficient.raw:.6g} | {coefficient.standardized:.6g} | "
            f"{coefficient.odds_ratio:.6g} |"
        )
    lines += [
        "",
        "## Lineage",
        f"- feature spec sha256 `{lineage.feature_spec_hash}`",
        f"- code commit `{lineage.git_commit}`",
        f"- uv.lock sha256 `{lineage.lock_hash}`",
        "- packages: " + ", ".join(f"{name} {version}" for name, version in lineage.package_versions.items()),
        "",
    ]
    return "\n".join(lines)
