"""Stage progress of a flow, for whoever started it (the CLI shows it; Prefect's own logs show it too)."""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["add_listener", "remove_listener", "stage"]

_listeners: list[Callable[[str], None]] = []
_log = logging.getLogger("scoregate")


def add_listener(listener: Callable[[str], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[str], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def stage(name: str) -> None:
    _log.info("stage: %s", name)
    for listener in list(_listeners):
        listener(name)
