"""How flows wrap the plain functions of `tasks/` as Prefect tasks: names, retries and no input caching."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

__all__ = ["step"]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may succeed next time: I/O errors, not a data or configuration problem."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OSError)


def step(fn: Any, name: str, retries: int = 0) -> Any:
    """A Prefect task around `fn`. Inputs are often large frames: hashing them for Prefect's cache would cost more
    than the step itself, so results are never cached."""
    return task(
        fn,
        name=name,
        retries=retries,
        retry_delay_seconds=2,
        retry_condition_fn=_transient if retries else None,
        cache_policy=NO_CACHE,
    )
