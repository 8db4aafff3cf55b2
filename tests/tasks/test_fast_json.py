"""Request bodies read the way the scorer needs: NaN kept for the record check, unpaired surrogates refused."""

from __future__ import annotations

import math

import pytest

from tasks import fast_json


def test_plain_json_reads_as_the_standard_library_reads_it() -> None:
    # given an ordinary body, when it is read, then it is the same value
    assert fast_json.loads(b'{"a": [1, 2.5, "x", true, null], "b": {"c": "caf\\u00e9"}}') == {
        "a": [1, 2.5, "x", True, None],
        "b": {"c": "café"},
    }


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_read_as_floats(constant: str) -> None:
    # given a body holding a non-finite constant, when it is read, then the value is a float the record check sees
    value = fast_json.loads(f'{{"amount": {constant}}}'.encode())["amount"]
    assert isinstance(value, float) and not math.isfinite(value)


def test_a_pair_of_surrogates_is_one_character() -> None:
    # given an emoji written as an escaped surrogate pair, when it is read, then it is that one character
    assert fast_json.loads(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


@pytest.mark.parametrize(
    "body",
    [b'{"card_id": "\\ud800"}', b'{"\\udc00": 1}', b'[{"a": ["ok", "\\udfff"]}]', b'{"amount": NaN, "x": "\\ud800"}'],
    ids=["value", "key", "nested", "beside-nan"],
)
def test_an_unpaired_surrogate_is_refused(body: bytes) -> None:
    # given valid JSON whose text is not Unicode, when it is read, then it is refused saying why
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        fast_json.loads(body)


def test_malformed_json_is_still_a_value_error() -> None:
    with pytest.raises(ValueError):
        fast_json.loads(b'{"a": ')
