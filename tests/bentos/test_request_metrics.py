"""Request counts by status include the scorer's own failures, which the canary's error-rate query reads."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from bentos.api import create_app
from bentos.engine import ScoringEngine
from tasks.sample_bento import SampleModel
from tests.bentos.conftest import transaction


class FailingEngine(ScoringEngine):
    """The sample model's engine with a scoring step that breaks, as a bug or a lost dependency would."""

    async def score(self, records: list[Any], request_id: str) -> list[dict[str, Any]]:
        raise RuntimeError("scoring broke")


def requests_counted(metrics: str, status: str) -> float:
    pattern = rf'bentoml_service_request_total\{{endpoint="/score",http_response_code="{status}"[^}}]*\}} (\S+)'
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


def test_a_failing_score_is_answered_500_and_counted_as_one(sample: SampleModel) -> None:
    # given the scorer's routes around an engine whose scoring raises
    engine = FailingEngine(sample.model, sample.manifest, store=None, log=None)
    with TestClient(create_app(lambda: engine), raise_server_exceptions=False) as client:
        # when two requests come in
        statuses = [client.post("/score", json=transaction()).status_code for _ in range(2)]
        metrics = client.get("/metrics").text
    # then both were answered 500 and the request counter holds both under that status
    assert statuses == [500, 500]
    assert requests_counted(metrics, "500") == 2.0
    assert requests_counted(metrics, "200") == 0.0
