"""The scorer's HTTP routes as a Starlette app, mounted into the BentoML service with `@bentoml.asgi_app`.

Routes: `POST /score`, `GET /model`, `GET /metrics`, `GET /openapi.json`. BentoML itself answers `/healthz`,
`/livez` and `/readyz` (which asks the service's `__is_ready__`: model loaded and online store answering).

Why a mounted Starlette app rather than `@bentoml.api`: measured on this project's 2-core machine, a `@bentoml.api`
endpoint costs about 2 ms of server time per single-record request (IO descriptors, pydantic models, a thread hop),
while an async Starlette handler inside the same `bentoml serve` process costs a fraction of that, so it is the only
way to the latency targets while still being served from a built bento.

Refusals are always 4xx with a JSON body {"message", "errors": [{"record", "field", "expected", "got"}],
"request_id"}: 400 malformed JSON, 413 body or record count over the limit, 415 not application/json, 422 a record
that breaks the raw schema (or an empty list, or a body of the wrong shape). 503 means the online store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bentos.engine import InputRejected, ScoringEngine
from bentos.metrics import CONTENT_TYPE
from bentos.openapi import openapi_document
from tasks import fast_json
from tasks.online_store import OnlineStoreError
from tasks.record_validation import FieldError

__all__ = ["REQUEST_ID_HEADER", "create_app"]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_FIELD = "(body)"
_JSON = "application/json"
_LOG_FLUSH_S = 1.0
logger = logging.getLogger("scoregate.scorer")


def _json_response(payload: Any, status: int, request_id: str | None) -> Response:
    body = fast_json.dumps(payload)
    headers = {"x-request-id": request_id} if request_id is not None else None
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _refusal(rejected: InputRejected, request_id: str) -> Response:
    payload = {
        "message": rejected.message,
        "errors": [error.as_dict() for error in rejected.errors],
        "request_id": request_id,
    }
    return _json_response(payload, rejected.status, request_id)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InputRejected(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise InputRejected(413, f"request body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputRejected(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> Any:
    if not body:
        raise InputRejected(400, "malformed JSON: empty body")
    try:
        return fast_json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InputRejected(400, f"malformed JSON: {error}") from None


def _records(payload: Any, fields: tuple[str, ...], max_records: int) -> tuple[list[Any], bool]:
    """The records of a body: one transaction, a list of them, or {"records": [...]}; and whether it was one."""
    if isinstance(payload, dict):
        if "records" in payload and len(payload) == 1 and "records" not in fields:
            payload = payload["records"]
            if not isinstance(payload, list):
                raise InputRejected(
                    422, "'records' must be a list", [FieldError(0, "records", "a list of transactions")]
                )
        else:
            return [payload], True
    if not isinstance(payload, list):
        raise InputRejected(
            422,
            'expected a transaction object, a list of them, or {"records": [...]}',
            [FieldError(0, _BODY_FIELD, "a JSON object or array", type(payload).__name__)],
        )
    if not payload:
        raise InputRejected(422, "no records to score", [FieldError(0, _BODY_FIELD, "at least one record", "[]")])
    if len(payload) > max_records:
        raise InputRejected(413, f"{len(payload)} records: over the limit of {max_records} per request")
    return payload, False


class _RequestMetrics:
    """Pure-ASGI middleware: counts each response by path and status and times it, into the engine's metrics."""

    def __init__(self, app: ASGIApp, engine: Callable[[], ScoringEngine | None]) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        counted = False

        def count() -> None:
            nonlocal counted
            engine = self.engine()
            if engine is not None and not counted:
                counted = True
                engine.metrics.observe_request(scope["path"], status, time.perf_counter() - start)

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            # Starlette's error middleware, outside this one, answers a 500 when no response has started: count it
            # here, or the canary's error-rate query would read zero for a scorer that fails.
            if status == 0:
                status = 500
                count()
            raise


def create_app(engine_factory: Callable[[], ScoringEngine]) -> Starlette:
    """The routes, with `engine_factory` called once at start-up (inside the server's event loop)."""
    state: dict[str, Any] = {"engine": None, "openapi": None}

    def engine() -> ScoringEngine:
        current: ScoringEngine | None = state["engine"]
        if current is None:
            raise RuntimeError("the scoring engine is not started")
        return current

    async def score(request: Request) -> Response:
        scorer = engine()
        request_id = request.headers.get(REQUEST_ID_HEADER) or ""
        if not _REQUEST_ID.match(request_id):
            request_id = scorer.request_ids.next()
        try:
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != _JSON:
                raise InputRejected(415, f"Content-Type must be {_JSON}, got {content_type or 'none'!r}")
            body = await _read_body(request, scorer.limits.max_body_bytes)
            records, single = _records(_parse(body), scorer.validator.fields, scorer.limits.max_records)
            results = await scorer.score(records, request_id)
        except InputRejected as rejected:
            if not rejected.errors or rejected.errors[0].field in (_BODY_FIELD, "records"):
                scorer.metrics.reject(_BODY_FIELD)
            return _refusal(rejected, request_id)
        except OnlineStoreError as error:
            logger.error("online store failed: %s", error)
            return _json_response({"message": "online feature store unavailable", "request_id": request_id}, 503, None)
        return _json_response(results[0] if single else results, 200, request_id)

    async def model(_: Request) -> Response:
        return _json_response(engine().model_info(), 200, None)

    async def metrics(_: Request) -> Response:
        return Response(engine().metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(_: Request) -> Response:
        if state["openapi"] is None:
            scorer = engine()
            state["openapi"] = openapi_document(scorer.model.pipeline.spec, scorer.target_column, scorer.limits)
        return _json_response(state["openapi"], 200, None)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        scorer = engine_factory()
        await scorer.start()
        state["engine"] = scorer
        flusher = asyncio.create_task(_flush_log_periodically(scorer))
        # Everything loaded so far lives as long as the process: keep it out of the garbage collector's scans, which
        # otherwise stall a request now and then for as long as a full collection of BentoML's import graph takes.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await scorer.stop()

    app = Starlette(
        routes=[
            Route("/score", score, methods=["POST"]),
            Route("/model", model, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        # BentoML runs a mounted app's lifespan and routes only the app's own paths to it when it is a Starlette
        # instance, so the request metrics go in as Starlette middleware rather than as an outer wrapper.
        middleware=[Middleware(_RequestMetrics, engine=lambda: state["engine"])],
        lifespan=lifespan,
    )
    return app


async def _flush_log_periodically(scorer: ScoringEngine) -> None:
    while True:
        await asyncio.sleep(_LOG_FLUSH_S)
        if scorer.log is not None:
            scorer.log.flush()
