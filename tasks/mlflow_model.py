"""The MLflow pyfunc flavour of a ScoringModel, so `mlflow.pyfunc.load_model` scores like the batch path.

It wraps the same JSON ScoringModel the bento serves; no second implementation of the features exists here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from tasks.model import ScoringModel

__all__ = ["ARTIFACT_KEY", "ScoringModelPyfunc"]

ARTIFACT_KEY = "scoring_model"


class ScoringModelPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from pathlib import Path

        self._model = ScoringModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = pl.from_pandas(model_input)
        scores = self._model.score(frame)
        return pd.DataFrame({"score": scores, "decision": self._model.decide(scores)})
