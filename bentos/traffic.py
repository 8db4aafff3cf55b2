"""BentoML's request timeout, with its timer released as soon as the request is answered.

BentoML 1.4 wraps every request in `TimeoutMiddleware` (`traffic.timeout` must be a positive number, so it cannot be
switched off), which schedules `loop.call_later(timeout, ...)` per request and never cancels it. Each answered request
so leaves a timer handle, a future and a context alive for the whole timeout: at 4,000 requests per second and the
scorer's 10 s that is about 170,000 objects in the garbage collector's oldest generation, and each full collection
then stops the event loop for 30-90 ms, which measured as a p99 of 35-45 ms at concurrency 16 on a 2-core machine
(`benchmarks/serving.py`). Cancelling the timer when the request ends keeps the same timeout behaviour (a 504 when no
response has started in time) without the garbage.

`release_request_timers()` swaps the middleware's `__call__` for the one below; it is idempotent and checks that the
class still has the attributes this code relies on, so a BentoML upgrade that changes them fails at start-up, loudly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

__all__ = ["release_request_timers"]

_MARK = "_scoregate_releases_timers"


async def _call_releasing_timer(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Upstream's `TimeoutMiddleware.__call__`, plus `timer.cancel()` once the request has finished."""
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def started(message: Message) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    handling = asyncio.ensure_future(self.app(scope, receive, started))
    try:
        await waiter
    except TimeoutError:
        if handling.cancel():
            response = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
            )
            await response(scope, receive, send)
    else:
        await handling
    finally:
        timer.cancel()


def release_request_timers() -> None:
    """Make BentoML's TimeoutMiddleware cancel its per-request timer (see the module's docstring)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if getattr(TimeoutMiddleware, _MARK, False):
        return
    if not callable(getattr(TimeoutMiddleware, "_set_timer_out", None)):
        raise RuntimeError("bentoml's TimeoutMiddleware has changed: review bentos/traffic.py for this version")
    TimeoutMiddleware.__call__ = _call_releasing_timer  # type: ignore[method-assign]
    setattr(TimeoutMiddleware, _MARK, True)
