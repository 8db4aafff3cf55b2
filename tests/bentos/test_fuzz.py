"""Fuzz the served bento with schemathesis against its own OpenAPI document: no input makes it answer 5xx.

Bounded and deterministic: a fixed number of derandomized examples per generation mode (data that fits the schema,
and data that does not), no example database. Every answer must also match the document (status codes, content type,
response schema), and the service must still score a valid transaction afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.bentos.conftest import Server, assert_still_serving

EXAMPLES = 60


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["fitting", "not-fitting"])
def test_generated_requests_never_get_a_server_error(served: Server, mode: GenerationMode) -> None:
    # given the service's own OpenAPI document
    document = served.get("/openapi.json").json()
    operation = schemathesis.openapi.from_dict(document)["/score"]["POST"]
    statuses: list[int] = []

    # when schemathesis sends generated requests to POST /score
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=served.url)
        statuses.append(response.status_code)
        # then no answer is a 5xx, and every answer is one the document describes
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    send()
    assert len(statuses) >= EXAMPLES // 2
    assert max(statuses) < 500
    # and the service still scores afterwards
    assert_still_serving(served)
