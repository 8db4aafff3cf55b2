"""The one line a CLI prints for an error."""

from __future__ import annotations

from tasks.messages import first_line


def test_the_first_line_of_a_long_message_is_kept() -> None:
    assert first_line(ValueError("  amount: expected a number\n  at row 7\n")) == "amount: expected a number"


def test_an_empty_message_falls_back_to_the_type_or_the_given_default() -> None:
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError(""), default="") == ""
