"""Shared pieces for flow tests: a small config and a helper that runs the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.config import TrainingConfig, load_training_config
from tasks.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = PROJECT_ROOT / "tasks" / "configs"


def small_default_config(**updates: object) -> TrainingConfig:
    """The embedded default with fewer bootstrap resamples, so a flow test stays quick."""
    config = load_training_config(CONFIGS / "card_fraud.yaml")
    evaluation = config.evaluation.model_copy(update={"bootstrap_resamples": 50, "fairness_min_positives": 5})
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


TRAINED_ROWS = 20_000


@contextlib.contextmanager
def home_at(home: Path) -> Iterator[Settings]:
    """Point SCOREGATE_HOME at `home` for the block (module- and session-scoped fixtures cannot monkeypatch)."""
    previous = os.environ.get("SCOREGATE_HOME")
    os.environ["SCOREGATE_HOME"] = str(home)
    try:
        yield Settings.from_env()
    finally:
        if previous is None:
            os.environ.pop("SCOREGATE_HOME", None)
        else:
            os.environ["SCOREGATE_HOME"] = previous


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Settings]]:
    """One training flow run on generated data, shared by the flow tests that read (not change) its results."""
    home = tmp_path_factory.mktemp("trained-home")
    with home_at(home) as settings:
        from flows.training import training_flow

        summary = training_flow(config=small_default_config().model_dump(mode="json"), rows=TRAINED_ROWS)
        yield summary, settings
