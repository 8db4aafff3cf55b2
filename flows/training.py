"""The training flow: raw data to a validated, trained, evaluated, registered and packaged model.

Each step is a plain function from `tasks/` wrapped as a Prefect task here; the flow only chains them. I/O steps
retry on transient errors (OSError), never on bad data, which fails the same way every time. A failure after
registration removes the registered version, so a failed run leaves no version behind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from flows.progress import stage
from flows.steps import step
from tasks.config import TrainingConfig
from tasks.dataset import prepare_dataset
from tasks.features import feature_spec_hash
from tasks.ingest import ingest_file
from tasks.lineage import collect_lineage
from tasks.package import build_bento
from tasks.registry import discard_version, log_training_run, record_bento
from tasks.reporting import evaluate_test_split, training_artifacts, write_run_reports
from tasks.settings import Settings
from tasks.source import resolve_source
from tasks.summary import RowCounts, TrainingSummary
from tasks.train import build_scoring_model, select_and_fit

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_ROWS", "load_default_config", "training_flow"]

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


@flow(name="scoregate-training", log_prints=True, validate_parameters=True)
def training_flow(config: dict[str, Any] | None = None, rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """Train on the configured data (the built-in generator when `config` names none) and return the summary."""
    settings = Settings.from_env()
    settings.ensure_dirs()
    cfg = TrainingConfig.model_validate(config) if config is not None else load_default_config()

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
    run_name = f"train-{cfg.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    reports = reports_task(settings.reports_dir / run_name, model, prepared, report, ingested.report, lineage)
    stage("Registering in MLflow")
    artifacts = training_artifacts(cfg, prepared, fit, model, report, ingested.report, lineage, reports, run_name)
    registered = register_task(settings, cfg.model_name, artifacts)
    stage("Building the bento")
    try:
        manifest = {
            "model_name": cfg.model_name,
            "model_version": registered.model_version,
            "run_id": registered.run_id,
            "scoring_model_sha256": reports.scoring_model_sha256,
            "feature_spec_hash": lineage.feature_spec_hash,
            "target_column": cfg.target.column,
        }
        bento = package_task(
            settings,
            reports.scoring_model,
            manifest,
            name=cfg.model_name,
            version=f"v{registered.model_version}-{reports.scoring_model_sha256[:12]}",
        )
        record_bento_task(settings, registered, bento.tag, bento.digest)
    except BaseException as error:
        discard_version(settings, registered, f"packaging failed: {error}")
        raise
    sizes = split.sizes()
    summary = TrainingSummary(
        run_id=registered.run_id,
        model_name=cfg.model_name,
        model_version=registered.model_version,
        bento_tag=bento.tag,
        bento_digest=bento.digest,
        metrics=report.metrics,
        threshold=model.threshold,
        threshold_method=model.threshold_method,
        regularisation_c=model.regularisation_c,
        coefficients=model.coefficient_table(),
        rows=RowCounts(
            read=ingested.report.rows_read,
            rejected=ingested.report.rows_rejected,
            train=sizes["train"],
            valid=sizes["valid"],
            test=sizes["test"],
        ),
        data_hash=lineage.data_hash,
        feature_spec_hash=lineage.feature_spec_hash,
        reports_dir=str(reports.folder),
        quarantine_path=ingested.report.quarantine_path,
        warnings=fit.warnings,
    )
    (reports.folder / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    return summary.model_dump(mode="json")
