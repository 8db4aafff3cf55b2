"""The JSON Schemas this project publishes, generated from the pydantic records and committed.

A test regenerates them and compares, so a change to a record shows up as a reviewable schema diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.config import TrainingConfig
from tasks.decision import DECISION_BUNDLE_SCHEMA_PATH, DecisionBundle
from tasks.report import EvaluationReport
from tasks.summary import TrainingSummary

__all__ = ["SCHEMA_DIR", "published_schemas", "render_schema", "write_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parent / "json_schemas"


def published_schemas() -> dict[Path, type[BaseModel]]:
    return {
        SCHEMA_DIR / "training_config.schema.json": TrainingConfig,
        SCHEMA_DIR / "evaluation_report.schema.json": EvaluationReport,
        SCHEMA_DIR / "training_summary.schema.json": TrainingSummary,
        DECISION_BUNDLE_SCHEMA_PATH: DecisionBundle,
    }


def render_schema(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(*, check_only: bool = False) -> list[Path]:
    """Write every schema whose committed text differs; returns those paths (only reports them when check_only)."""
    stale: list[Path] = []
    for path, model in published_schemas().items():
        text = render_schema(model)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not check_only:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    return stale
