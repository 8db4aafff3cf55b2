from __future__ import annotations

import pytest

from tasks.registry import server_credentials
from tasks.secrets import SecretsError


def test_a_local_store_needs_no_credentials() -> None:
    # given a SQLite tracking store and secrets configured
    env = {"SCOREGATE_ALLOW_ENV_SECRETS": "1", "SCOREGATE_SECRET_MLFLOW_PASSWORD": "pw"}
    # when / then: nothing is read, nothing is set
    assert server_credentials("sqlite:///tmp/mlflow.db", env) == {}


def test_a_remote_server_gets_its_credentials_from_the_secrets_module() -> None:
    # given a remote tracking server and laptop secrets allowed
    env = {
        "SCOREGATE_ALLOW_ENV_SECRETS": "1",
        "SCOREGATE_SECRET_MLFLOW_USERNAME": "trainer",
        "SCOREGATE_SECRET_MLFLOW_PASSWORD": "s3cret",
    }
    # when the MLflow adapter asks for credentials
    found = server_credentials("https://mlflow.example", env)
    # then MLflow's own variables carry them
    assert found == {"MLFLOW_TRACKING_USERNAME": "trainer", "MLFLOW_TRACKING_PASSWORD": "s3cret"}


def test_unreachable_vault_fails_closed_for_a_remote_server() -> None:
    # given Vault configured at an address where nothing listens
    env = {"SCOREGATE_VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "t", "SCOREGATE_VAULT_TIMEOUT": "2"}
    # when / then: no credentials means no run, with a message naming the secret's path
    with pytest.raises(SecretsError, match="scoregate/mlflow"):
        server_credentials("https://mlflow.example", env)
