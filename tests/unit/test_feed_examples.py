"""A merchant feed record's labelled examples are checked by C-level passes over the list
(state/merchant_feed.py `_checked`), and number by number only when something is wrong: both
ways must accept and refuse exactly the same lists, since whatever one instance accepts
every other must fold alike."""

from __future__ import annotations

from array import array
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.state.merchant_feed import FeedError, decode_feed

_VALUE = st.one_of(st.integers(-2**63, 2**64 - 1), st.floats(), st.booleans(), st.none(),
                   st.text(max_size=3), st.just(0), st.just(1), st.just(1.0))


def _reference(value: list[Any]) -> array[float] | None:
    """The check as it was, a number at a time: finite ints and floats, never a bool."""
    out = array("d")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        number = float(v)
        if number != number or number in (float("inf"), float("-inf")):
            return None
        out.append(number)
    return out if out[0] in (0.0, 1.0) and 2 <= len(out) <= 257 else None


def _record(example: list[Any]) -> bytes:
    return orjson.dumps({"s": 1, "w": None, "t": None, "e": [[5.0, 2, "", example]]})


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUE, min_size=1, max_size=12), st.sampled_from([0, 1, 1.0, 0.0, True, 2]))
def test_an_example_is_accepted_exactly_when_every_value_is_a_finite_number(
        rest: list[Any], label: Any) -> None:
    example = [label, *rest]
    try:
        raw = _record(example)
    except orjson.JSONEncodeError:  # an integer past 64 bits is no JSON orjson writes
        return
    want = _reference(orjson.loads(raw)["e"][0][3])
    if want is None:
        with pytest.raises(FeedError):
            decode_feed(raw)
    else:
        got = decode_feed(raw).events[0][3]
        assert isinstance(got, array) and got.tobytes() == want.tobytes()


def test_what_is_wrong_with_an_example_is_named() -> None:
    with pytest.raises(FeedError, match="example value must be a number"):
        decode_feed(_record([1, 0.5, True]))
    with pytest.raises(FeedError, match="label must be 0 or 1"):
        decode_feed(_record([2, 0.5]))
    # JSON has no NaN or infinity: orjson refuses a number past a double's range as it reads.
    with pytest.raises(FeedError, match="not JSON"):
        decode_feed(_record([1, 0.5]).replace(b"0.5", b"1e999"))
