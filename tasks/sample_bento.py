"""A small trained model and its bento, made directly from the scoring core (no Prefect, no MLflow).

Tests and `benchmarks/serving.py` need a real bento to serve. The training flow makes one too, but runs Prefect and
MLflow around it (~30 s); this trains the same way (generator -> prepare_dataset -> select_and_fit ->
build_scoring_model), writes the manifest the flow writes plus the serving extras (`design_means`,
`threshold_version`), and calls the same `build_bento`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tasks.config import TrainingConfig, load_training_config
from tasks.dataset import PreparedData, prepare_dataset
from tasks.features import feature_spec_hash
from tasks.generator import generate_transactions
from tasks.model import ScoringModel
from tasks.package import BentoRecord, build_bento
from tasks.reason_codes import design_means
from tasks.settings import Settings
from tasks.train import build_scoring_model, select_and_fit

__all__ = ["DEFAULT_CONFIG", "SampleModel", "build_sample_bento", "train_sample_model"]

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "card_fraud.yaml"


@dataclass(frozen=True)
class SampleModel:
    """A trained model with everything a test needs to compare serving against the batch path."""

    config: TrainingConfig
    frame: pl.DataFrame
    prepared: PreparedData
    model: ScoringModel
    model_path: Path
    manifest: dict[str, Any]


def train_sample_model(
    folder: Path, *, rows: int = 20_000, seed: int = 7, model_version: str = "1", config: TrainingConfig | None = None
) -> SampleModel:
    """Train on `rows` generated transactions and save the model and its manifest under `folder`."""
    cfg = config or load_training_config(DEFAULT_CONFIG)
    frame = generate_transactions(rows, seed=seed)
    prepared = prepare_dataset(frame, cfg, source="generator")
    split = prepared.split
    fit = select_and_fit(
        prepared.train, prepared.labels[split.train], prepared.valid, prepared.labels[split.valid], cfg.model
    )
    model = build_scoring_model(
        prepared.pipeline, fit, prepared.valid, prepared.labels[split.valid], cfg.threshold, cfg.model_name
    )
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "scoring_model.json"
    digest = model.save(model_path)
    manifest: dict[str, Any] = {
        "model_name": cfg.model_name,
        "model_version": model_version,
        "run_id": f"sample-{seed}-{rows}",
        "scoring_model_sha256": digest,
        "feature_spec_hash": feature_spec_hash(cfg.spec),
        "target_column": cfg.target.column,
        "design_means": design_means(model.feature_names, prepared.train),
        "threshold_version": f"{model_version}.{model.threshold_method}",
    }
    return SampleModel(
        config=cfg, frame=frame, prepared=prepared, model=model, model_path=model_path, manifest=manifest
    )


def build_sample_bento(settings: Settings, sample: SampleModel, *, version: str | None = None) -> BentoRecord:
    """Package the sample model with the project's bentofile, as the training flow does."""
    tag_version = version or f"v{sample.manifest['model_version']}-{sample.manifest['scoring_model_sha256'][:12]}"
    return build_bento(settings, sample.model_path, sample.manifest, name=sample.config.model_name, version=tag_version)
