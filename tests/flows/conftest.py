"""Shared pieces for flow tests: a small config and a helper that runs the CLI in-process."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tasks.config import TrainingConfig, load_training_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = PROJECT_ROOT / "tasks" / "configs"


def small_default_config(**updates: object) -> TrainingConfig:
    """The embedded default with fewer bootstrap resamples, so a flow test stays quick."""
    config = load_training_config(CONFIGS / "card_fraud.yaml")
    evaluation = config.evaluation.model_copy(update={"bootstrap_resamples": 50})
    return config.model_copy(update={"evaluation": evaluation, **updates})


def run_cli(*argv: str) -> tuple[int, str, str]:
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")
