"""The evaluation record that promotion gates on.

An `EvaluationReport` is what the evaluation step writes and what the promotion policy reads, so it is a frozen,
typed record whose JSON Schema is published (`tasks/schemas/evaluation_report.schema.json`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ConfusionCounts",
    "EvaluationReport",
    "MetricValue",
    "SegmentReport",
]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricValue(_Record):
    """A point estimate with its seeded bootstrap 95% interval."""

    value: float
    ci_low: float
    ci_high: float


class ConfusionCounts(_Record):
    """Counts at the decision threshold (positive = the risky class)."""

    true_positive: int = Field(ge=0)
    false_positive: int = Field(ge=0)
    true_negative: int = Field(ge=0)
    false_negative: int = Field(ge=0)


class SegmentReport(_Record):
    """Metrics for one value of a segment column (for example channel = online)."""

    column: str
    value: str
    rows: int = Field(ge=0)
    positives: int = Field(ge=0)
    metrics: dict[str, MetricValue]


class EvaluationReport(_Record):
    """Everything measured about one model on one held-out split."""

    split: str = Field(description="Which split was scored, normally 'test'.")
    rows: int = Field(ge=0)
    positives: int = Field(ge=0)
    threshold: float = Field(ge=0.0, le=1.0)
    metrics: dict[str, MetricValue] = Field(
        description="roc_auc, pr_auc, log_loss, brier, ece, ks, precision, recall, f1 (each with a 95% interval)."
    )
    confusion: ConfusionCounts
    segments: list[SegmentReport] = Field(default_factory=list)
    bootstrap_resamples: int = Field(ge=0)
    bootstrap_seed: int
