"""Evaluation of a trained model on the test split, and the files and records a training run leaves behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.config import TrainingConfig
from tasks.dataset import PreparedData
from tasks.ingest import IngestReport, file_sha256
from tasks.lineage import Lineage
from tasks.model import ScoringModel
from tasks.model_card import render_model_card
from tasks.registry import TrainingArtifacts
from tasks.report import EvaluationReport
from tasks.train import FitResult

__all__ = [
    "LABEL_COLUMN",
    "SNAPSHOT_FILE",
    "SPLIT_COLUMN",
    "RunReports",
    "evaluate_test_split",
    "training_artifacts",
    "write_evaluation_snapshot",
    "write_run_reports",
]


SNAPSHOT_FILE = "evaluation_snapshot.parquet"
LABEL_COLUMN = "_label"
SPLIT_COLUMN = "_split"


@dataclass(frozen=True)
class RunReports:
    folder: Path
    evaluation: Path
    snapshot: Path
    snapshot_sha256: str
    model_card: Path
    scoring_model: Path
    scoring_model_sha256: str
    plots: dict[str, Path]


def evaluate_test_split(model: ScoringModel, prepared: PreparedData, config: TrainingConfig) -> EvaluationReport:
    from tasks.evaluate import evaluate_scores

    test_rows = prepared.split.test
    scores = model.score_design(prepared.test)
    segments = {
        column: prepared.base[column].cast(pl.String).fill_null("(null)").to_numpy()[test_rows]
        for column in config.evaluation.segments
    }
    return evaluate_scores(
        prepared.labels[test_rows],
        scores,
        model.threshold,
        segments=segments or None,
        split="test",
        resamples=config.evaluation.bootstrap_resamples,
        seed=config.seed,
    )


def write_run_reports(
    folder: Path,
    model: ScoringModel,
    prepared: PreparedData,
    report: EvaluationReport,
    ingest: IngestReport,
    lineage: Lineage,
) -> RunReports:
    """Write the evaluation report, plots, model card and model JSON into one folder per run."""
    from tasks.plots import write_evaluation_plots

    folder.mkdir(parents=True, exist_ok=True)
    evaluation = folder / "evaluation_report.json"
    evaluation.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    scoring_model = folder / "scoring_model.json"
    sha256 = model.save(scoring_model)
    test_rows = prepared.split.test
    plots = write_evaluation_plots(prepared.labels[test_rows], model.score_design(prepared.test), folder / "plots")
    card = folder / "model_card.md"
    card.write_text(
        render_model_card(
            model,
            report,
            ingest,
            lineage,
            split_sizes=prepared.split.sizes(),
            split_method=prepared.split.method,
        ),
        encoding="utf-8",
    )
    snapshot = folder / SNAPSHOT_FILE
    snapshot_sha256 = write_evaluation_snapshot(snapshot, prepared, model)
    return RunReports(
        folder=folder,
        evaluation=evaluation,
        snapshot=snapshot,
        snapshot_sha256=snapshot_sha256,
        model_card=card,
        scoring_model=scoring_model,
        scoring_model_sha256=sha256,
        plots=plots,
    )


def write_evaluation_snapshot(path: Path, prepared: PreparedData, model: ScoringModel) -> str:
    """Freeze the rows a promotion scores candidate and champion on; returns the file's SHA-256.

    All validated rows are kept, not only the test split: the per-entity aggregates of a test row need the history
    before it. `_split` marks the test rows and `_label` holds the 0/1 target, so any later model can be scored on
    exactly the same evidence whatever its own target configuration.
    """
    raw_columns = [c for c in model.pipeline.spec.columns if c in prepared.base.columns]
    split = np.full(prepared.base.height, "train", dtype=object)
    split[prepared.split.valid] = "valid"
    split[prepared.split.test] = "test"
    snapshot = prepared.base.select(raw_columns).with_columns(
        pl.Series(LABEL_COLUMN, prepared.labels, dtype=pl.Int8),
        pl.Series(SPLIT_COLUMN, split, dtype=pl.String),
    )
    snapshot.write_parquet(path)
    return file_sha256(path)


def _metric_values(report: EvaluationReport) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, metric in report.metrics.items():
        values[f"test_{name}"] = metric.value
        values[f"test_{name}_ci_low"] = metric.ci_low
        values[f"test_{name}_ci_high"] = metric.ci_high
    for segment in report.segments:
        for name, metric in segment.metrics.items():
            values[f"segment_{segment.column}_{segment.value}_{name}"] = metric.value
    return {key: value for key, value in values.items() if np.isfinite(value)}


def training_artifacts(
    config: TrainingConfig,
    prepared: PreparedData,
    fit: FitResult,
    model: ScoringModel,
    report: EvaluationReport,
    ingest: IngestReport,
    lineage: Lineage,
    reports: RunReports,
    run_name: str,
) -> TrainingArtifacts:
    sizes = prepared.split.sizes()
    params: dict[str, str | int | float] = {
        "model_name": config.model_name,
        "C_grid": json.dumps(config.model.C),
        "C_selected": fit.best.C,
        "selection_metric": fit.selection_metric,
        "class_weight": json.dumps(config.model.class_weight),
        "threshold_method": model.threshold_method,
        "threshold": model.threshold,
        "split_method": prepared.split.method,
        "seed": config.seed,
        "features": len(model.feature_names),
        "bootstrap_resamples": report.bootstrap_resamples,
        **{f"rows_{name}": size for name, size in sizes.items()},
    }
    metrics = {
        **_metric_values(report),
        "rows_read": float(ingest.rows_read),
        "rows_rejected": float(ingest.rows_rejected),
        "rejected_share": ingest.rejected_share,
        "lbfgs_iterations": float(fit.best.iterations),
    }
    tags = {
        **lineage.tags(),
        "scoregate.scoring_model_sha256": reports.scoring_model_sha256,
        "scoregate.threshold": f"{model.threshold:.17g}",
        "scoregate.target_column": config.target.column,
        "scoregate.snapshot_hash": reports.snapshot_sha256,
        "scoregate.fairness_segment": config.evaluation.fairness_segment or "",
        "scoregate.fairness_min_positives": str(config.evaluation.fairness_min_positives),
    }
    return TrainingArtifacts(
        params=params,
        metrics=metrics,
        tags=tags,
        files=[
            ("", reports.evaluation),
            ("snapshot", reports.snapshot),
            *(("plots", path) for path in reports.plots.values()),
        ],
        json_documents={
            "feature_spec.json": config.spec.model_dump(mode="json"),
            "feature_pipeline.json": model.pipeline.model_dump(mode="json"),
            "scoring_model.json": model.model_dump(mode="json"),
            "ingest_report.json": ingest.model_dump(mode="json"),
            "training_config.json": config.model_dump(mode="json"),
            "schemas/raw_columns.json": {n: c.model_dump(mode="json") for n, c in config.spec.columns.items()},
            "schemas/design_columns.json": model.feature_names,
        },
        text_documents={"model_card.md": reports.model_card.read_text(encoding="utf-8")},
        scoring_model_path=reports.scoring_model,
        input_example=prepared.base.select(list(config.spec.columns)).drop(config.target.column).head(5),
        run_name=run_name,
    )
