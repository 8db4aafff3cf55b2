"""One-line messages for errors: what a CLI prints and what a wrapping error quotes."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first line of `error`'s message; `default` (else the error's type name) when the message is empty."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if default is None else default
