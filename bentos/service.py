"""The scorer bento: loads the packaged ScoringModel, checks its digest, validates requests and scores them.

Features are computed by the same `FeaturePipeline.transform` the training run used; this module adds only the
HTTP edge. It imports the scoring core (config, features, model, schemas) and nothing else from the project.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bentoml
import pandera.polars as pandera
import polars as pl

from tasks.model import ScoringModel
from tasks.schemas import coerce_to_schema, raw_schema

__all__ = ["MODEL_DIR_ENV", "Scorer", "load_packaged_model"]

MODEL_DIR_ENV = "SCOREGATE_MODEL_DIR"
_DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"


def load_packaged_model(model_dir: Path) -> tuple[ScoringModel, dict[str, Any]]:
    """Load the model and refuse it when its SHA-256 differs from the one recorded at packaging."""
    manifest: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    model = ScoringModel.load(model_dir / "scoring_model.json", expected_sha256=manifest["scoring_model_sha256"])
    return model, manifest


@bentoml.service(name="scoregate-scorer", traffic={"timeout": 10})
class Scorer:
    def __init__(self) -> None:
        model_dir = Path(os.environ.get(MODEL_DIR_ENV, str(_DEFAULT_MODEL_DIR)))
        self.model, self.manifest = load_packaged_model(model_dir)
        self.schema = raw_schema(self.model.pipeline.spec, self.manifest["target_column"], labelled=False)

    @bentoml.api
    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        frame = pl.DataFrame(records, infer_schema_length=None)
        spec = self.model.pipeline.spec
        timestamp_format = spec.timestamp.format if spec.timestamp is not None else None
        typed, failures = coerce_to_schema(frame, spec, timestamp_format)
        if failures.height:
            raise bentoml.exceptions.InvalidArgument("; ".join(failures["reason"].head(5).to_list()))
        try:
            self.schema.validate(typed, lazy=True)
        except pandera.errors.SchemaErrors as error:
            cases = error.failure_cases.head(5)
            raise bentoml.exceptions.InvalidArgument(
                "; ".join(f"record {r['index']}: {r['column']}: {r['check']}" for r in cases.iter_rows(named=True))
            ) from error
        scores = self.model.score(typed)
        decisions = self.model.decide(scores)
        return [
            {
                "score": float(score),
                "decision": "decline" if decision else "approve",
                "threshold": self.model.threshold,
                "model_version": self.manifest["model_version"],
            }
            for score, decision in zip(scores, decisions, strict=True)
        ]
