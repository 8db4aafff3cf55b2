"""Runtime settings: where everything lives and which servers to talk to.

Everything a run writes sits under one home folder (`SCOREGATE_HOME`, default `./.scoregate`): the MLflow SQLite
store and artifacts, the BentoML store, generated data, quarantine files and reports. The embedded defaults need
nothing started by hand; setting a URL (for example `SCOREGATE_MLFLOW_TRACKING_URI`) points the same code at a server.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["TELEMETRY_OFF", "Settings", "quiet_environment"]

# Each of these tools otherwise phones home or waits on a network that is not there.
TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "UV_PYTHON_DOWNLOADS": "never",
    "GIT_PYTHON_REFRESH": "quiet",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    mlflow_tracking_uri: str
    experiment_name: str = "scoregate"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("SCOREGATE_HOME", ".scoregate")).expanduser().resolve()
        tracking = env.get("SCOREGATE_MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        return cls(
            home=home,
            mlflow_tracking_uri=tracking,
            experiment_name=env.get("SCOREGATE_EXPERIMENT", "scoregate"),
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    def ensure_dirs(self) -> None:
        for folder in (
            self.home,
            self.artifacts_dir,
            self.bentoml_home,
            self.data_dir,
            self.reports_dir,
            self.prefect_home,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        """Variables the libraries read at import time; set before importing them."""
        return {
            **TELEMETRY_OFF,
            "BENTOML_HOME": str(self.bentoml_home),
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "PREFECT_HOME": str(self.prefect_home),
        }


def quiet_environment(settings: Settings) -> None:
    """Create the home folders and apply the settings' environment (values already set by the user win)."""
    settings.ensure_dirs()
    for key, value in settings.environment().items():
        os.environ.setdefault(key, value)


def quiet_library_logs() -> None:
    """Keep MLflow to its warnings in a command's output (`--verbose` skips this), less two nobody can act on: the
    pyfunc adapter is a small class of this project's (its pickle is read back only by MLflow's own loader), and a
    uv environment has no pip whose version MLflow could pin."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
