"""The summary a training run prints (`--json` prints it as JSON): what was trained, how well, and where it went."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tasks.model import Coefficient
from tasks.report import MetricValue

__all__ = ["RowCounts", "TrainingSummary"]


class RowCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    read: int
    rejected: int
    train: int
    valid: int
    test: int


class TrainingSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    model_name: str
    model_version: str
    bento_tag: str
    bento_digest: str
    metrics: dict[str, MetricValue]
    threshold: float
    threshold_method: str
    regularisation_c: float | None
    coefficients: list[Coefficient]
    rows: RowCounts
    data_hash: str
    feature_spec_hash: str
    reports_dir: str
    quarantine_path: str | None
    warnings: list[str]
