"""Test-session environment: telemetry off, Prefect's local API in a session folder, a non-interactive plot backend.

These are set before Prefect, MLflow or BentoML is imported, because each reads its settings at import time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="scoregate-tests-"))
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "UV_PYTHON_DOWNLOADS": "never",
    "MPLBACKEND": "Agg",
    "PREFECT_HOME": str(_SESSION_DIR / "prefect"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "SCOREGATE_HOME": str(_SESSION_DIR / "home"),
}.items():
    os.environ[_key] = _value
(_SESSION_DIR / "prefect").mkdir(parents=True, exist_ok=True)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scoregate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SCOREGATE_HOME for one test: its own MLflow store, BentoML store and reports."""
    home = tmp_path / "home"
    monkeypatch.setenv("SCOREGATE_HOME", str(home))
    monkeypatch.delenv("SCOREGATE_MLFLOW_TRACKING_URI", raising=False)
    return home
