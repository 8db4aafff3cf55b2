"""Library output a command keeps quiet unless asked for it."""

from __future__ import annotations

import logging
import os

import pytest

from tasks.settings import quiet_library_logs


def test_mlflow_keeps_to_its_warnings_without_the_two_nobody_can_act_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # given MLflow's loggers at their defaults and no logging level in the environment
    names = ("mlflow", "mlflow.pyfunc", "mlflow.utils.environment")
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    # when a command quiets the libraries
    quiet_library_logs()
    # then MLflow warns, the cloudpickle and pip notices are silent, and MLflow's own set-up is told the same
    assert [logging.getLogger(name).getEffectiveLevel() for name in names] == [
        logging.WARNING,
        logging.ERROR,
        logging.ERROR,
    ]
    assert not logging.getLogger("mlflow.pyfunc").isEnabledFor(logging.WARNING)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
