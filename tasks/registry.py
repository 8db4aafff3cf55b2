"""The MLflow adapter: the one module that talks to the tracking store and the model registry.

A training run logs its parameters, metrics with intervals, artifacts and lineage, then registers a model version.
If anything after registration fails, the caller calls `discard_version`, so a failed run never leaves a
registered version behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.settings import Settings

__all__ = [
    "RegisteredModel",
    "TrainingArtifacts",
    "UnknownModelVersion",
    "VersionInfo",
    "delete_alias",
    "discard_version",
    "download_run_artifact",
    "get_version",
    "log_training_run",
    "mlflow_client",
    "record_bento",
    "run_metrics",
    "server_credentials",
    "set_alias",
    "version_for_alias",
]

PIP_REQUIREMENTS = ["numpy", "polars", "pandas", "pydantic", "pyyaml", "pandera[polars]"]


class RegisteredModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str


@dataclass(frozen=True)
class TrainingArtifacts:
    """Files and values one training run records."""

    params: Mapping[str, str | int | float]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    files: Sequence[tuple[str, Path]]  # (artifact sub-folder, file)
    json_documents: Mapping[str, Any]  # artifact file name -> JSON-serialisable document
    text_documents: Mapping[str, str]  # artifact file name -> text
    scoring_model_path: Path
    input_example: pl.DataFrame
    run_name: str


def server_credentials(tracking_uri: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Basic-auth variables for a remote MLflow server, read from Vault; nothing for a local store.

    A remote server with Vault configured (or laptop secrets allowed) gets its credentials from the secrets module,
    failing closed when they cannot be read; the values go to MLflow's own variables and nowhere else.
    """
    env = os.environ if environ is None else environ
    remote = tracking_uri.startswith(("http://", "https://"))
    configured = bool(env.get("SCOREGATE_VAULT_ADDR")) or env.get("SCOREGATE_ALLOW_ENV_SECRETS") == "1"
    if not remote or not configured:
        return {}
    from tasks.secrets import mlflow_environment, secret_store

    with secret_store(env) as store:
        return mlflow_environment(store)


def _configure(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id (created on first use)."""
    import mlflow

    os.environ.update(server_credentials(settings.mlflow_tracking_uri))

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(settings.experiment_name, artifact_location=settings.artifacts_dir.as_uri()))


def mlflow_client(settings: Settings) -> Any:
    from mlflow.tracking import MlflowClient

    _configure(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def log_training_run(settings: Settings, model_name: str, artifacts: TrainingArtifacts) -> RegisteredModel:
    """Log one training run and register its model; on failure nothing stays registered."""
    import mlflow
    from mlflow.models import infer_signature

    from tasks.mlflow_model import ARTIFACT_KEY, ScoringModelPyfunc

    experiment_id = _configure(settings)
    client = mlflow_client(settings)
    version: str | None = None
    with mlflow.start_run(experiment_id=experiment_id, run_name=artifacts.run_name) as run:
        try:
            mlflow.log_params(dict(artifacts.params))
            mlflow.log_metrics(dict(artifacts.metrics))
            mlflow.set_tags(dict(artifacts.tags))
            for folder, path in artifacts.files:
                mlflow.log_artifact(str(path), artifact_path=folder or None)
            for name, document in artifacts.json_documents.items():
                mlflow.log_dict(document, name)
            for name, text in artifacts.text_documents.items():
                mlflow.log_text(text, name)
            example = artifacts.input_example.to_pandas()
            from tasks.model import ScoringModel

            scoring_model = ScoringModel.load(artifacts.scoring_model_path)
            scores = scoring_model.score(artifacts.input_example)
            signature = infer_signature(
                example, {"score": scores.tolist(), "decision": scoring_model.decide(scores).tolist()}
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ScoringModelPyfunc(),
                artifacts={ARTIFACT_KEY: str(artifacts.scoring_model_path)},
                code_paths=[str(Path(__file__).resolve().parent)],
                signature=signature,
                input_example=example,
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=model_name,
            )
            version = str(info.registered_model_version)
            for key, value in artifacts.tags.items():
                client.set_model_version_tag(model_name, version, key, value)
            client.set_model_version_tag(model_name, version, "scoregate.run_id", run.info.run_id)
        except BaseException:
            if version is not None:
                client.delete_model_version(model_name, version)
            raise
    return RegisteredModel(
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_name=model_name,
        model_version=version,
        model_uri=f"models:/{model_name}/{version}",
    )


def record_bento(settings: Settings, registered: RegisteredModel, bento_tag: str, bento_digest: str) -> None:
    client = mlflow_client(settings)
    client.set_model_version_tag(registered.model_name, registered.model_version, "scoregate.bento_tag", bento_tag)
    client.set_model_version_tag(
        registered.model_name, registered.model_version, "scoregate.bento_digest", bento_digest
    )
    client.set_tag(registered.run_id, "scoregate.bento_tag", bento_tag)
    client.set_tag(registered.run_id, "scoregate.bento_digest", bento_digest)


def discard_version(settings: Settings, registered: RegisteredModel, reason: str) -> None:
    """Undo a registration whose later steps failed; the run stays, marked failed, with the reason."""
    client = mlflow_client(settings)
    client.delete_model_version(registered.model_name, registered.model_version)
    client.set_tag(registered.run_id, "scoregate.failure", reason[:4000])
    client.set_terminated(registered.run_id, status="FAILED")


class UnknownModelVersion(LookupError):
    """The registry has no such model version (or no such model)."""


class VersionInfo(BaseModel):
    """What promotion needs to know about one registered version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]


def _version_info(version: Any) -> VersionInfo:
    return VersionInfo(
        model_name=version.name,
        version=str(version.version),
        run_id=version.run_id or "",
        tags=dict(version.tags),
        aliases=list(getattr(version, "aliases", []) or []),
    )


def get_version(settings: Settings, model_name: str, version: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return _version_info(client.get_model_version(model_name, version))
    except MlflowException as error:
        raise UnknownModelVersion(f"model {model_name!r} has no registered version {version!r}") from error


def version_for_alias(settings: Settings, model_name: str, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return _version_info(client.get_model_version_by_alias(model_name, alias))
    except MlflowException:
        return None


def set_alias(settings: Settings, model_name: str, alias: str, version: str) -> None:
    mlflow_client(settings).set_registered_model_alias(model_name, alias, version)


def delete_alias(settings: Settings, model_name: str, alias: str) -> None:
    mlflow_client(settings).delete_registered_model_alias(model_name, alias)


def download_run_artifact(settings: Settings, run_id: str, artifact_path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    local = mlflow_client(settings).download_artifacts(run_id, artifact_path, str(destination))
    return Path(local)


def run_metrics(settings: Settings, run_id: str) -> dict[str, float]:
    return dict(mlflow_client(settings).get_run(run_id).data.metrics)
