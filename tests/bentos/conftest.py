"""Shared pieces for the scorer tests: one trained sample model, its bento, a served bento, and a Redis server.

The model is trained directly from the scoring core (`tasks.sample_bento`, ~5 s) rather than through the Prefect
flow; the bento is built with the project's bentofile by the same `build_bento` the flow calls; servers are real
`bentoml serve` processes on 127.0.0.1 and free ports. Everything heavy is session-scoped so the suite stays quick.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tasks.package import BentoRecord
from tasks.sample_bento import SampleModel, build_sample_bento, train_sample_model
from tasks.settings import Settings
from tests.servers import free_port, redis_server, stop_process

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0


def request_records(frame: pl.DataFrame, target: str = "is_fraud") -> list[dict[str, Any]]:
    """Raw rows as a client sends them: no target, timestamps as ISO strings."""
    body = frame.drop(target).with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.f"))
    return body.to_dicts()


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, read whole."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Server:
    """A running `bentoml serve` (or `scoregate serve`) process and a keep-alive connection to it.

    The client is the standard library's: a parity replay sends thousands of requests, and http.client spends about
    half the client-side time per request that httpx does.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, content: bytes | None, headers: Mapping[str, str]) -> Reply:
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=content, headers=dict(headers))
                response = self._connection.getresponse()
                body = response.read()
                return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
            except (http.client.HTTPException, ConnectionError):
                # The server closed the kept-alive connection (as it may after a refused body): reconnect once.
                self._connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
        content = json.dumps(body).encode()
        return self.request("POST", "/score", content, {"Content-Type": "application/json", **(headers or {})})

    def post_raw(self, content: bytes, headers: Mapping[str, str]) -> Reply:
        return self.request("POST", "/score", content, headers)

    def get(self, path: str) -> Reply:
        return self.request("GET", path, None, {})

    def stop(self) -> None:
        self._connection.close()
        # The server runs in its own session: stop its whole group (arbiter and worker).
        stop_process(self.process, grace_s=30)


def launch(command: Sequence[str], env: Mapping[str, str], port: int, log_path: Path) -> Server:
    """Start `command` in its own session (so stopping it stops its children too); see `wait_ready`."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(process, port, log_path)


def wait_ready(server: Server) -> Server:
    """Wait until the server's /readyz answers 200; stop it and fail with its log when it does not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if server.get("/readyz").status_code == 200:
                return server
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"server did not start: {server.log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def bento_command(bento: BentoRecord, port: int) -> list[str]:
    return [str(VENV_BIN / "bentoml"), "serve", bento.tag, "--host", "127.0.0.1", "--port", str(port)]


def bento_env(settings: Settings, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "SCOREGATE_HOME": str(settings.home), **(extra_env or {})}


def serve_bento(
    bento: BentoRecord, settings: Settings, folder: Path, extra_env: Mapping[str, str] | None = None
) -> Server:
    port = free_port()
    server = launch(bento_command(bento, port), bento_env(settings, extra_env), port, folder / f"server-{port}.log")
    return wait_ready(server)


_transaction_numbers = itertools.count(1)


def transaction(**overrides: Any) -> dict[str, Any]:
    """A valid raw transaction on a card no other test uses (unless `card_id` is given)."""
    number = next(_transaction_numbers)
    record: dict[str, Any] = {
        "transaction_id": f"svc-tx-{number}",
        "card_id": f"svc-card-{number}",
        "timestamp": "2026-03-01T12:00:00",
        "amount": 42.5,
        "merchant_category": "grocery",
        "merchant_country": "FR",
        "card_country": "FR",
        "channel": "pos",
        "device_seen_before": True,
    }
    record.update(overrides)
    return record


def assert_still_serving(server: Server) -> None:
    response = server.post(transaction())
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["score"] <= 1.0


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleModel:
    return train_sample_model(tmp_path_factory.mktemp("sample-model"))


@pytest.fixture(scope="session")
def bento_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("bento-home")
    return Settings.from_env({"SCOREGATE_HOME": str(home)})


@pytest.fixture(scope="session")
def bento(sample: SampleModel, bento_settings: Settings) -> BentoRecord:
    return build_sample_bento(bento_settings, sample)


@pytest.fixture(scope="session")
def served(bento: BentoRecord, bento_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bento served with the embedded in-process store and a prediction log in its own folder."""
    folder = tmp_path_factory.mktemp("served")
    server = serve_bento(bento, bento_settings, folder, {"SCOREGATE_PREDICTION_LOG": str(folder / "predictions")})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server (Debian's) on 127.0.0.1 and a free port, with persistence off."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
