"""The scorer bento: loads the packaged ScoringModel, checks its digest, and serves the scoring routes.

Started with `bentoml serve <bento tag> --host 127.0.0.1 --port N` (or `scoregate serve`). At start-up the service
reads `model/manifest.json`, loads `model/scoring_model.json` and refuses to start when the file's SHA-256 differs
from the manifest's `scoring_model_sha256`. The routes (`bentos/api.py`) are a Starlette app mounted into the service;
BentoML answers `/healthz`, `/livez` and `/readyz` (the latter through `__is_ready__`).

Environment (all optional):
  SCOREGATE_MODEL_DIR          folder holding scoring_model.json and manifest.json (default: the bento's model/)
  SCOREGATE_ONLINE_STORE       'memory' (default, in-process) or redis://host:port/db (shared by replicas)
  SCOREGATE_PREDICTION_LOG     prediction-log folder (default $SCOREGATE_HOME/predictions), '-' (stdout) or 'off'
  SCOREGATE_PREDICTION_SAMPLE  share of scored rows written to the prediction log (default 1.0)
  SCOREGATE_MAX_BODY_BYTES     request body limit (default 1 MiB)
  SCOREGATE_MAX_RECORDS        records per request limit (default 1000)
  SCOREGATE_MAX_FUTURE_SECONDS how far after the clock a transaction may be dated (default 86400)

Serving choices, measured on the 2-core machine with `benchmarks/serving.py`:
- one worker: the in-process store is per process, and replicas (pods) scale out, each with one worker;
- BentoML's request-timeout timers are cancelled when a request ends (`bentos/traffic.py`): left alive they made
  garbage-collector pauses of 30-90 ms, the whole of the p99 tail;
- BentoML's access log and metrics middleware are off (the scorer exports BentoML's metric names itself, from plain
  counters), and OpenTelemetry tracing skips the scorer's paths: together they cost more per request than scoring;
- no adaptive batching: scoring a record costs tens of microseconds of Python and holds no accelerator, so there is
  no per-call fixed cost for a batch to amortise; batching would only add its wait (`max_latency_ms`) to every
  request and refuse requests with 503 when the queue is full, which is what STACK.md saw. Clients that have many
  records send them as a list (`POST /score` with up to 1000 records), which is the batch, scored with one store
  round trip and one matrix product.

Imports only the scoring core (tasks.config, features, model and the small online modules), never Prefect or MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import bentoml

from bentos.api import create_app
from bentos.engine import ScoringEngine, build_engine
from bentos.traffic import release_request_timers
from tasks.model import ScoringModel

__all__ = ["MODEL_DIR_ENV", "Scorer", "build_engine", "load_packaged_model", "verify_packaged_model"]

MODEL_DIR_ENV = "SCOREGATE_MODEL_DIR"
_DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
_SCORER_PATHS = ["/score", "/model", "/metrics", "/openapi.json", "/healthz", "/livez", "/readyz"]


def load_packaged_model(model_dir: Path) -> tuple[ScoringModel, dict[str, Any]]:
    """Load the model and refuse it when its SHA-256 differs from the one recorded at packaging."""
    manifest: dict[str, Any] = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    model = ScoringModel.load(model_dir / "scoring_model.json", expected_sha256=manifest["scoring_model_sha256"])
    return model, manifest


def verify_packaged_model(model_dir: Path) -> None:
    """Raise when the model file's SHA-256 differs from the manifest's (a no-op where no manifest exists)."""
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        return
    expected = json.loads(manifest_path.read_text(encoding="utf-8"))["scoring_model_sha256"]
    actual = hashlib.sha256((model_dir / "scoring_model.json").read_bytes()).hexdigest()
    if actual != expected:
        raise RuntimeError(
            f"refusing to start: {model_dir / 'scoring_model.json'} has SHA-256 {actual}, "
            f"the manifest recorded {expected} at packaging"
        )


def _model_dir() -> Path:
    return Path(os.environ.get(MODEL_DIR_ENV, str(_DEFAULT_MODEL_DIR)))


# `bentoml serve` imports this module in its main process before it starts any worker: checking here makes a
# tampered bento fail at once with an error, instead of workers that BentoML would restart forever.
verify_packaged_model(_model_dir())


# BentoML's request timeout keeps a timer per answered request alive for the whole timeout; those pile up into long
# garbage-collector pauses under load (bentos/traffic.py has the figures). Released here, before any worker starts.
release_request_timers()


def _current_engine() -> ScoringEngine:
    service: Scorer = bentoml.get_current_service()
    return service.engine


@bentoml.asgi_app(create_app(_current_engine), path="/")
@bentoml.service(
    name="scoregate-scorer",
    workers=1,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    tracing={"excluded_urls": _SCORER_PATHS},
)
class Scorer:
    def __init__(self) -> None:
        self.model, self.manifest = load_packaged_model(_model_dir())
        self.engine = build_engine(self.model, self.manifest, os.environ)
        bento_version = bentoml.server_context.bento_version
        self.engine.metrics.service_version = str(bento_version or "not available")

    async def __is_ready__(self) -> bool:
        return await self.engine.ready()
