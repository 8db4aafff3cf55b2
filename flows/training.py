"""The training flow: raw data to a validated, trained, evaluated, registered and packaged model.

Each step is a plain function from `tasks/` wrapped as a Prefect task here; the flow only chains them. I/O steps
retry on transient errors (OSError), never on bad data, which fails the same way every time. A failure after
registration removes the registered version, so a failed run leaves no version behind.

`flows/training_steps.py` runs the same tasks one pod at a time for Argo Workflows (`scoregate step`); the glue
between tasks (run name, bento manifest and version, summary) lives here in functions both use, so the two ways of
running the flow cannot compute different things.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prefect import flow

from flows.progress import stage
from flows.steps import step
from tasks.config import TrainingConfig
from tasks.dataset import prepare_dataset
from tasks.features import feature_spec_hash
from tasks.ingest import IngestReport, ingest_file
from tasks.lineage import Lineage, collect_lineage
from tasks.locks import exclusive_lock
from tasks.model import ScoringModel
from tasks.package import BentoRecord, build_bento
from tasks.registry import RegisteredModel, discard_version, log_training_run, record_bento
from tasks.report import EvaluationReport
from tasks.reporting import RunReports, evaluate_test_split, training_artifacts, write_run_reports
from tasks.settings import Settings
from tasks.source import resolve_source
from tasks.summary import RowCounts, TrainingSummary
from tasks.train import build_scoring_model, select_and_fit

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ROWS",
    "bento_manifest",
    "bento_version",
    "save_drift_reference",
    "load_default_config",
    "training_flow",
    "training_run_name",
    "training_summary",
    "write_summary",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "tasks" / "configs" / "card_fraud.yaml"
DEFAULT_ROWS = 200_000


def load_default_config() -> TrainingConfig:
    from tasks.config import load_training_config

    return load_training_config(DEFAULT_CONFIG_PATH)


resolve_source_task = step(resolve_source, "resolve-source", retries=2)
ingest_task = step(ingest_file, "ingest-and-validate", retries=2)
prepare_task = step(prepare_dataset, "build-features-and-split")
fit_task = step(select_and_fit, "train-logistic-regression")
model_task = step(build_scoring_model, "choose-threshold")
evaluate_task = step(evaluate_test_split, "evaluate-test-split")
reports_task = step(write_run_reports, "write-reports", retries=2)
register_task = step(log_training_run, "register-in-mlflow", retries=2)
package_task = step(build_bento, "build-bento", retries=1)
record_bento_task = step(record_bento, "record-bento-in-mlflow", retries=2)


def training_run_name(config: TrainingConfig) -> str:
    """The MLflow run name, which also names the run's reports folder."""
    return f"train-{config.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"


def bento_manifest(
    config: TrainingConfig,
    registered: RegisteredModel,
    reports: RunReports,
    lineage: Lineage,
    *,
    model: ScoringModel,
    train_design: npt.NDArray[np.float64],
) -> dict[str, Any]:
    """What the bento carries about its model; the service checks the model file against its SHA-256.

    The training means of the design columns let the scorer's reason codes measure every contribution from the
    training mean (dummies and bins included), as adverse-action notices need.
    """
    from tasks.reason_codes import design_means

    return {
        "model_name": config.model_name,
        "model_version": registered.model_version,
        "run_id": registered.run_id,
        "scoring_model_sha256": reports.scoring_model_sha256,
        "feature_spec_hash": lineage.feature_spec_hash,
        "target_column": config.target.column,
        "threshold_version": f"{registered.model_version}.{model.threshold_method}",
        "design_means": design_means(model.feature_names, train_design),
    }


def bento_version(registered: RegisteredModel, reports: RunReports) -> str:
    return f"v{registered.model_version}-{reports.scoring_model_sha256[:12]}"


def training_summary(
    config: TrainingConfig,
    *,
    registered: RegisteredModel,
    bento: BentoRecord,
    report: EvaluationReport,
    model: ScoringModel,
    ingest: IngestReport,
    split_sizes: dict[str, int],
    lineage: Lineage,
    reports: RunReports,
    warnings: list[str],
) -> TrainingSummary:
    return TrainingSummary(
        run_id=registered.run_id,
        model_name=config.model_name,
        model_version=registered.model_version,
        bento_tag=bento.tag,
        bento_digest=bento.digest,
        metrics=report.metrics,
        threshold=model.threshold,
        threshold_method=model.threshold_method,
        regularisation_c=model.regularisation_c,
        coefficients=model.coefficient_table(),
        rows=RowCounts(
            read=ingest.rows_read,
            rejected=ingest.rows_rejected,
            train=split_sizes["train"],
            valid=split_sizes["valid"],
            test=split_sizes["test"],
        ),
        data_hash=lineage.data_hash,
        feature_spec_hash=lineage.feature_spec_hash,
        reports_dir=str(reports.folder),
        quarantine_path=ingest.quarantine_path,
        warnings=warnings,
    )


def save_drift_reference(settings: Settings, registered: RegisteredModel, reports: RunReports) -> list[str]:
    """The new version's drift reference profile; a failure is a warning (the first drift watch rebuilds it)."""
    from tasks.drift import DriftError
    from tasks.drift_reference import save_training_reference

    try:
        save_training_reference(
            settings,
            model_name=registered.model_name,
            model_version=registered.model_version,
            run_id=registered.run_id,
            scoring_model=reports.scoring_model,
            scoring_model_sha256=reports.scoring_model_sha256,
            snapshot=reports.snapshot,
            snapshot_sha256=reports.snapshot_sha256,
        )
    except (DriftError, OSError) as error:
        return [f"the drift reference profile was not saved, the first drift watch rebuilds it from MLflow: {error}"]
    return []


def write_summary(summary: TrainingSummary, reports: RunReports) -> Path:
    path = reports.folder / "summary.json"
    path.write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    return path


@flow(name="scoregate-training", log_prints=True, validate_parameters=True)
def training_flow(config: dict[str, Any] | None = None, rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """Train on the configured data (the built-in generator when `config` names none) and return the summary."""
    settings = Settings.from_env()
    settings.ensure_dirs()
    cfg = TrainingConfig.model_validate(config) if config is not None else load_default_config()
    # The nightly deployment's concurrency limit does not see a retrain that the drift watch starts inside its own
    # flow run: this lock keeps any two trainings in one home from overlapping (the second waits).
    timeout = float(os.environ.get("SCOREGATE_TRAINING_LOCK_TIMEOUT_SECONDS", "7200"))
    with exclusive_lock(settings.home / "locks" / "training.lock", timeout_seconds=timeout, purpose="training"):
        return _train(settings, cfg, rows)


def _train(settings: Settings, cfg: TrainingConfig, rows: int) -> dict[str, Any]:
    stage("Reading data")
    path, data_format = resolve_source_task(cfg, settings, rows)
    stage("Validating raw data")
    ingested = ingest_task(
        path, data_format, cfg.spec, cfg.target, cfg.validation, settings.quarantine_dir / cfg.model_name
    )
    stage("Building features")
    prepared = prepare_task(ingested.frame, cfg, source=str(path))
    stage("Training")
    split = prepared.split
    fit = fit_task(
        prepared.train, prepared.labels[split.train], prepared.valid, prepared.labels[split.valid], cfg.model
    )
    model = model_task(
        prepared.pipeline, fit, prepared.valid, prepared.labels[split.valid], cfg.threshold, cfg.model_name
    )
    stage("Evaluating")
    report = evaluate_task(model, prepared, cfg)
    lineage = collect_lineage(ingested.report.data_hash, feature_spec_hash(cfg.spec))
    run_name = training_run_name(cfg)
    reports = reports_task(settings.reports_dir / run_name, model, prepared, report, ingested.report, lineage)
    stage("Registering in MLflow")
    artifacts = training_artifacts(cfg, prepared, fit, model, report, ingested.report, lineage, reports, run_name)
    registered = register_task(settings, cfg.model_name, artifacts)
    stage("Building the bento")
    try:
        bento = package_task(
            settings,
            reports.scoring_model,
            bento_manifest(cfg, registered, reports, lineage, model=model, train_design=prepared.train),
            name=cfg.model_name,
            version=bento_version(registered, reports),
        )
        record_bento_task(settings, registered, bento.tag, bento.digest)
    except BaseException as error:
        discard_version(settings, registered, f"packaging failed: {error}")
        raise
    stage("Saving the drift reference")
    warnings = [*fit.warnings, *save_drift_reference(settings, registered, reports)]
    summary = training_summary(
        cfg,
        registered=registered,
        bento=bento,
        report=report,
        model=model,
        ingest=ingested.report,
        split_sizes=split.sizes(),
        lineage=lineage,
        reports=reports,
        warnings=warnings,
    )
    write_summary(summary, reports)
    return summary.model_dump(mode="json")
