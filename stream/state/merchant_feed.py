"""The merchant feed's records: one input partition's merchant events since its last
checkpoint, with its watermark. Pure: plain values in, bytes out, and back.

Why a feed: partitions are keyed by card, so each merchant's traffic is spread over every
partition, and over every instance of the scorer. Each instance publishes, per partition it
owns, the merchant events it folded into its table (`<application_id>.merchant-feed`,
partition N for input partition N, in the checkpoint's transaction), and folds the other
partitions' records into its own copy of the table (stream/serving/merchant_feed.py). The
table's fold order depends only on the events, so every instance reads the same merchant state
(stream/core/features/merchant_table.py).

A record is JSON: ``{"s": first sequence number, "w": watermark, "t": stream time,
"e": [[effective time, kind, merchant, value], ...]}``; ``null`` stands for "none yet" (minus
infinity) in ``w`` and ``t``. Kind 0 is a transaction, 1 a label, 2 a labelled example for the
shared champion (``model_state = "shared"``, core/scoring/timeline.py): merchant ``""``, value
``[label, *features]``. What is read back is untrusted: anything malformed raises
FeedError and the reader skips the record, counted.

>>> raw = encode_feed(7, [(100.0, 0, "m1", 0.0), (130.0, 1, "m1", 1.0)], 70.0, 130.0)
>>> feed = decode_feed(raw)
>>> feed.first_seq, feed.events, feed.mark, feed.stream_time
(7, [(100.0, 0, 'm1', 0.0), (130.0, 1, 'm1', 1.0)], 70.0, 130.0)
>>> decode_feed(b'{"s": 1, "w": null, "t": null, "e": [[1.0, 2, "", [1, 0.5, 2]]]}').events
[(1.0, 2, '', array('d', [1.0, 0.5, 2.0]))]
>>> decode_feed(b'{"s": 1, "w": null, "t": null, "e": [[1, 3, "m", 0]]}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
stream.state.merchant_feed.FeedError: event 0: kind must be 0 (transaction), 1 (label) or 2...
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stream.core.features.merchant_table import LEARN, FeedEvent
from stream.errors import FraudStreamError

__all__ = ["FeedError", "FeedRecord", "decode_feed", "encode_feed"]

# A merchant id longer than this is not one (the codec bounds ids in events too).
MAX_MERCHANT_CHARS = 1024
# An example carries its label and at most this many features, less one.
MAX_EXAMPLE_VALUES = 257


class FeedError(FraudStreamError, ValueError):
    """A feed record that cannot be used; the reader skips it and counts it."""


@dataclass(frozen=True, slots=True)
class FeedRecord:
    first_seq: int
    events: list[FeedEvent]
    mark: float
    stream_time: float


def _time(value: float) -> float | None:
    return value if math.isfinite(value) else None


def encode_feed(first_seq: int, events: Sequence[FeedEvent], mark: float,
                stream_time: float) -> bytes:
    """One feed record (see the module docstring)."""
    return orjson.dumps({"s": first_seq, "w": _time(mark), "t": _time(stream_time),
                         "e": events}, default=_plain)


def _plain(value: Any) -> list[float]:
    """An example's array as a JSON list (orjson asks for what it cannot encode itself)."""
    if type(value) is array:
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} in a feed record")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise FeedError(f"{what} must be finite")
    return number


def _optional_time(value: Any, what: str) -> float:
    return -math.inf if value is None else _number(value, what)


def _example(index: int, value: Any) -> array[float]:
    """A LEARN event's value: the label (0 or 1), then the decision-time features."""
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_EXAMPLE_VALUES:
        raise FeedError(f"event {index}: an example must be a list [label, features...] of "
                        f"2 to {MAX_EXAMPLE_VALUES} numbers")
    example = _checked(value)
    if example is None:  # something is wrong: find what, number by number, and say so
        example = array("d", [_number(v, f"event {index}: example value") for v in value])
    if example[0] not in (0.0, 1.0):
        raise FeedError(f"event {index}: an example's label must be 0 or 1")
    return example


_NUMBER_TYPES = frozenset({int, float})


def _checked(values: list[Any]) -> array[float] | None:
    """`values` packed when every one is a finite int or float (not a bool), else None.

    Why not `_number` per value: every instance decodes every other instance's labelled
    examples (a label and ~31 features each), and a Python call per number was most of a
    feed record's decoding: a labelled transaction's feed events took 11.9 us to decode,
    5.3 us with the same checks made by C-level passes over the list.

    >>> _checked([1, 0.5]), _checked([1, True]), _checked([1.0, float("nan")])
    (array('d', [1.0, 0.5]), None, None)
    """
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return None
    try:
        packed = array("d", values)
    except OverflowError:  # an integer beyond a double's range
        return None
    return packed if all(map(math.isfinite, packed)) else None


def _event(index: int, raw: Any) -> FeedEvent:
    if not isinstance(raw, list) or len(raw) != 4:
        raise FeedError(f"event {index}: must be [eff, kind, merchant, value]")
    eff, kind, merchant, value = raw
    if kind == LEARN and not isinstance(kind, bool):
        if merchant != "":
            raise FeedError(f"event {index}: an example (kind 2) has no merchant")
        return (_number(eff, f"event {index}: eff"), LEARN, "", _example(index, value))
    if kind not in (0, 1) or isinstance(kind, bool):
        raise FeedError(f"event {index}: kind must be 0 (transaction), 1 (label) or 2 "
                        "(example)")
    if not isinstance(merchant, str) or not merchant or len(merchant) > MAX_MERCHANT_CHARS:
        raise FeedError(f"event {index}: merchant must be a string of 1 to "
                        f"{MAX_MERCHANT_CHARS} characters")
    return (_number(eff, f"event {index}: eff"), kind, merchant,
            _number(value, f"event {index}: value"))


def decode_feed(raw: bytes | None) -> FeedRecord:
    """A feed record read back from Kafka, checked field by field."""
    if raw is None:
        raise FeedError("empty record")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FeedError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FeedError("must be a JSON object")
    first = body.get("s")
    if isinstance(first, bool) or not isinstance(first, int) or first < 1:
        raise FeedError("s (first sequence number) must be an integer >= 1")
    events = body.get("e")
    if not isinstance(events, list):
        raise FeedError("e (events) must be a list")
    return FeedRecord(first, [_event(i, e) for i, e in enumerate(events)],
                      _optional_time(body.get("w"), "w (watermark)"),
                      _optional_time(body.get("t"), "t (stream time)"))
