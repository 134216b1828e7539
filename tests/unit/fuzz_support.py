"""Strategies and settings shared by the fuzz suite (tests/unit/test_fuzz_*.py, issue 13 item 9).

Two kinds of input: arbitrary bytes (what a broken or hostile producer can send), and
near-valid events: a valid transaction or label with some fields dropped, replaced by any JSON
value or a nasty string, extra fields added, and the JSON text sometimes cut short. The second
kind reaches the validation paths arbitrary bytes almost never reach.

How many examples run, and with which randomness, is set once for the unit suite in
tests/unit/conftest.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import strategies as st

NOW_MS = 1_795_687_200_000  # 2026-11-26T10:00:00Z: the record timestamps' centre

# Text that has broken parsers: empty, huge, control characters, lone surrogates' UTF-8
# neighbours, right-to-left marks, NUL, and ids that look like numbers.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\u202e", "\ud7ff", "\ufeff", "0", "-1", "1e400",
                     "null", "NaN", "9999-12-31T23:59:59Z", "a" * 5_000]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), nasty_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
timestamps = st.one_of(
    st.integers(min_value=NOW_MS - 400 * 86_400_000, max_value=NOW_MS + 86_400_000),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.integers(min_value=1_700_000_000, max_value=1_800_000_000),  # seconds sent as ms
    st.builds(lambda d, zone: d.isoformat() + zone, st.datetimes(),
              st.sampled_from(["Z", "+00:00", "", "+14:00", "-23:59"])),
    st.sampled_from(["2026-11-26T10:00:00Z", "2026-11-26T10:00:00+05:30",
                     "2026-11-26T10:00:00", "0001-01-01T00:00:00Z", "not a date"]),
)


def dumps(obj: Any) -> bytes:
    """JSON as a producer might write it: orjson, or the json module for what orjson
    refuses (NaN, infinities, integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


def _valid_transaction(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "transaction_id": draw(st.text(min_size=1, max_size=12)),
        "card_id": draw(st.sampled_from(["c1", "c2", "c3", "\u00e9t\u00e9", "c" * 300])),
        "merchant_id": draw(st.text(min_size=1, max_size=8)),
        "amount": draw(st.floats(min_value=0.0, max_value=1e7, allow_nan=False)),
        "timestamp": NOW_MS + draw(st.integers(min_value=-86_400_000, max_value=3_600_000)),
    }


# One value of each JSON type, equally likely: what a field gets when a producer confuses types.
wrong_types = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), nasty_text,
    st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=5), json_scalars,
                                                        max_size=3),
)


@st.composite
def near_valid(draw: st.DrawFn, kind: str = "transaction") -> bytes:
    """The JSON of a valid transaction (or label), then broken in one way, or not at all:
    fields dropped, fields of the wrong type, extra fields, the text cut short, or another
    JSON document altogether."""
    obj = _valid_transaction(draw)
    if kind == "label":
        obj = {k: obj[k] for k in ("transaction_id", "card_id", "timestamp")}
        obj["is_fraud"] = draw(st.booleans())
    elif draw(st.booleans()):
        obj["is_fraud"] = draw(st.one_of(st.booleans(), st.sampled_from([0, 1])))
    fields = sorted(obj)
    mode = draw(st.sampled_from(["valid", "drop", "retype", "retype", "extra", "cut", "other"]))
    if mode == "drop":
        for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True)):
            del obj[name]
    elif mode == "retype":
        for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
            obj[name] = draw(timestamps if name == "timestamp" and draw(st.booleans())
                             else wrong_types)
    elif mode == "extra":
        obj.update(draw(st.dictionaries(st.text(max_size=10), json_values, min_size=1,
                                        max_size=3)))
    raw = dumps(draw(json_values)) if mode == "other" else dumps(obj)
    if mode == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


def finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)
