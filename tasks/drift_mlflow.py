"""Record a drift watch in MLflow: one monitoring run per window, in the same experiment as the training runs.

The run is named `drift-<model>-v<version>-<environment>-<window end>` and tagged `scoregate.kind=drift-watch`,
`scoregate.model_version` and `scoregate.champion_run_id` (the training run of the champion it watched), so the
MLflow UI lists a champion's watches next to its training run without changing that run: a finished training run
is lineage evidence for promotions and stays as it was recorded. Metrics: rows, score PSI, the largest feature PSI,
the share of drifted features and one `psi_<feature>` per feature; artifacts: the Evidently HTML report and the
DriftReport JSON under `drift/`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path

from tasks.drift import DriftReport
from tasks.registry import mlflow_client
from tasks.settings import Settings

__all__ = ["DRIFT_RUN_KIND", "log_monitoring_run"]

DRIFT_RUN_KIND = "drift-watch"


def _metric_name(text: str) -> str:
    # MLflow metric names allow letters, digits and _ - . space / only.
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", text)


def log_monitoring_run(
    settings: Settings,
    report: DriftReport,
    files: Mapping[str, Path],
    *,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one monitoring run with the report's figures and `files` (artifact name -> path); returns its run id."""
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    run_name = (
        f"drift-{report.model_name}-v{report.model_version}-{report.environment}-{report.window.end:%Y%m%dT%H%M%S}"
    )
    run = client.create_run(
        experiment.experiment_id,
        run_name=run_name,
        tags={
            "scoregate.kind": DRIFT_RUN_KIND,
            "scoregate.model_name": report.model_name,
            "scoregate.model_version": report.model_version,
            "scoregate.environment": report.environment,
            "scoregate.champion_run_id": report.reference.run_id,
            "scoregate.window_start": report.window.start.isoformat(),
            "scoregate.window_end": report.window.end.isoformat(),
            "scoregate.most_drifted": ",".join(report.most_drifted),
            **dict(tags or {}),
        },
    )
    run_id: str = run.info.run_id
    try:
        metrics = {
            "rows": float(report.rows),
            "score_psi": report.score.psi,
            "max_feature_psi": max((f.psi for f in report.features), default=0.0),
            "drifted_share": report.drifted_share,
            "decline_rate_current": report.score.decline_rate_current,
            "decline_rate_reference": report.score.decline_rate_reference,
            "malformed_lines": float(report.log.malformed),
            **{_metric_name(f"psi_{f.name}"): f.psi for f in report.features},
        }
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now_ms, 0) for key, value in metrics.items()])
        for _, path in sorted(files.items()):
            client.log_artifact(run_id, str(path), "drift")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
