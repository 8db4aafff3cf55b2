"""BentoML's request timeout with its timers released: answered requests leave no timer, slow ones still get a 504."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.types import Message, Receive, Scope, Send

from bentos.traffic import release_request_timers

HTTP_SCOPE: Scope = {"type": "http", "path": "/score", "method": "POST", "headers": []}


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def answer_too_late(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(5)
    await answer_at_once(scope, receive, send)


async def nothing_to_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def live_timers() -> list[asyncio.TimerHandle]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, asyncio.TimerHandle) and not o.cancelled()]


def serve(middleware: Any, requests: int) -> tuple[list[Message], int]:
    """Run `requests` requests through `middleware`; return what was sent and the timers still waiting."""

    async def run() -> tuple[list[Message], int]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        for _ in range(requests):
            await middleware(HTTP_SCOPE, nothing_to_receive, send)
        await asyncio.sleep(0)  # one turn of the loop: a cancelled handler's own sleep is dropped on its next step
        return sent, len(live_timers())

    return asyncio.run(run())


def test_answered_requests_leave_no_timer_waiting() -> None:
    # given BentoML's timeout middleware, timers released, around an app that answers at once, with a long timeout
    release_request_timers()
    middleware = TimeoutMiddleware(answer_at_once, timeout=60)
    # when 200 requests are answered
    sent, waiting = serve(middleware, 200)
    # then every request got its answer and no timer is left to wait out the 60 s
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200] * 200
    assert waiting == 0


def test_a_request_not_answered_in_time_still_gets_a_504() -> None:
    # given the released middleware with a 50 ms timeout around an app that needs 5 s
    release_request_timers()
    middleware = TimeoutMiddleware(answer_too_late, timeout=0.05)
    # when one request comes
    sent, waiting = serve(middleware, 1)
    # then it is answered 504 with BentoML's message, and nothing is left scheduled
    start, body = sent
    assert start["status"] == 504
    assert "0.05 seconds" in json.loads(body["body"])["error"]
    assert waiting == 0


def test_releasing_twice_keeps_one_wrapper() -> None:
    # given the middleware released once
    release_request_timers()
    first = TimeoutMiddleware.__call__
    # when the service module is imported again (a worker restart) and releases again
    release_request_timers()
    # then the same wrapper stays in place
    assert TimeoutMiddleware.__call__ is first
