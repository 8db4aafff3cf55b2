"""THE parity test: the running service computes the batch job's features and scores, row for row.

The sample data is replayed in time order through the served bento: the training and validation periods as lists of
1,000 records (they fill the online store with the cards' histories), then every row of the test split as its own
request. The batch pipeline computed the same test rows with the whole history in one frame. Every served score, and
every feature the service logged for the row, must equal the batch value within 1e-9; once with the embedded
in-process store, once with Redis shared by two replicas that take turns (one started by `bentoml serve`, the other
by `flows.serve.serve`, the function behind `scoregate serve`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis

from tasks.online_store import history_namespace
from tasks.package import BentoRecord
from tasks.sample_bento import SampleModel
from tasks.settings import Settings
from tests.bentos.conftest import Server, bento_command, bento_env, launch, request_records, wait_ready
from tests.servers import free_port

WARM_CHUNK = 1_000
TOLERANCE = 1e-9


def replay(servers: Sequence[Server], sample: SampleModel, prefix: str) -> list[float]:
    """Send the warm-up period as lists and the test split row by row, taking turns across `servers`."""
    records = request_records(sample.frame)
    test_rows = sample.prepared.split.test
    first_test = int(test_rows[0])
    assert list(test_rows) == list(range(first_test, len(records)))  # the time split's test rows are the tail
    turn = 0
    for start in range(0, first_test, WARM_CHUNK):
        chunk = records[start : min(start + WARM_CHUNK, first_test)]
        response = servers[turn % len(servers)].post(chunk, headers={"X-Request-ID": f"{prefix}-warm-{start}"})
        assert response.status_code == 200, response.text
        turn += 1
    scores: list[float] = []
    for row in range(first_test, len(records)):
        response = servers[turn % len(servers)].post(records[row], headers={"X-Request-ID": f"{prefix}-{row}"})
        assert response.status_code == 200, response.text
        scores.append(response.json()["score"])
        turn += 1
    return scores


def logged_features(folder: Path, prefix: str, rows: int, timeout_s: float = 15.0) -> pl.DataFrame:
    """The features the servers logged for the replayed test rows, in row order (waits for buffered lines)."""
    wanted = f'"request_id":"{prefix}-'
    deadline = time.monotonic() + timeout_s
    while True:
        lines: dict[int, dict[str, Any]] = {}
        for path in folder.glob("predictions-*.jsonl*"):
            for text in path.read_text(encoding="utf-8").splitlines():
                if wanted in text and "-warm-" not in text:
                    line = json.loads(text)
                    lines[int(line["request_id"].rsplit("-", 1)[1])] = line["features"]
        if len(lines) >= rows or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(lines) == rows, f"{len(lines)} of {rows} rows logged"
    return pl.DataFrame([lines[row] for row in sorted(lines)], infer_schema_length=None)


def assert_batch_parity(sample: SampleModel, scores: list[float], features: pl.DataFrame) -> None:
    prepared = sample.prepared
    # scores: the batch path's ScoringModel on the batch design matrix of the test split
    batch_scores = sample.model.score_design(prepared.test)
    np.testing.assert_allclose(scores, batch_scores, rtol=0, atol=TOLERANCE)
    # features before encoding: the batch base frame's columns
    batch_base = prepared.base[prepared.split.test]
    for item in sample.config.spec.features:
        served, batch = features[item.name], batch_base[item.name]
        if item.kind == "numeric":
            np.testing.assert_allclose(
                served.cast(pl.Float64).to_numpy(), batch.cast(pl.Float64).to_numpy(), rtol=TOLERANCE, atol=TOLERANCE
            )
        else:
            assert served.cast(pl.String).to_list() == batch.cast(pl.String).to_list(), item.name
    # and the model inputs built from the served features by the batch encoder
    design = sample.model.pipeline.design_from_base(features).to_numpy()
    np.testing.assert_allclose(design, prepared.test, rtol=0, atol=TOLERANCE)


def test_replay_through_the_in_process_store_matches_the_batch_pipeline(served: Server, sample: SampleModel) -> None:
    # given the served bento with its embedded store (no card of the sample data scored before)
    # when the sample data is replayed through it in time order
    scores = replay([served], sample, "parity-memory")
    # then every test row's score and features equal the batch pipeline's within 1e-9
    features = logged_features(served.log_path.parent / "predictions", "parity-memory", len(scores))
    assert_batch_parity(sample, scores, features)


@pytest.fixture(scope="module")
def redis_replicas(
    bento: BentoRecord, bento_settings: Settings, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    """Two replicas sharing one Redis store: one from `bentoml serve`, one from `flows.serve.serve`."""
    folder = tmp_path_factory.mktemp("redis-replicas")
    extra = {"SCOREGATE_ONLINE_STORE": redis_url, "SCOREGATE_PREDICTION_LOG": str(folder / "predictions")}
    env = bento_env(bento_settings, extra)
    first_port, second_port = free_port(), free_port()
    launcher = (
        "import sys; from flows.serve import serve; "
        f"sys.exit(serve(bento_tag={bento.tag!r}, host='127.0.0.1', port={second_port}, online_store={redis_url!r}))"
    )
    # Both start at once: a start-up is mostly imports, and the two overlap well on two cores.
    replicas = [
        launch(bento_command(bento, first_port), env, first_port, folder / f"server-{first_port}.log"),
        launch([sys.executable, "-c", launcher], env, second_port, folder / f"server-{second_port}.log"),
    ]
    try:
        for replica in replicas:
            wait_ready(replica)
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


def test_replay_through_redis_shared_by_two_replicas_matches_the_batch_pipeline(
    redis_replicas: list[Server], sample: SampleModel, redis_url: str
) -> None:
    # given two replicas on one Redis store, both ready and both saying so
    assert {server.get("/model").json()["online_store"] for server in redis_replicas} == {"redis"}
    # when the sample data is replayed in time order, the replicas taking turns request by request
    scores = replay(redis_replicas, sample, "parity-redis")
    # then every test row's score and features equal the batch pipeline's within 1e-9
    features = logged_features(redis_replicas[0].log_path.parent / "predictions", "parity-redis", len(scores))
    assert_batch_parity(sample, scores, features)
    # and the histories live in Redis, one key per card
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{history_namespace(sample.config.spec)}:*", count=1000))
    assert len(keys) == sample.frame["card_id"].n_unique()
