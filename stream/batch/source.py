"""Inputs of the batch modes as decoded messages, and the one loop that feeds them to a Pipeline.

Files are decoded with the scorer's own codec (a CSV row or JSON line is serialised and read
back exactly as a Kafka value would be), so a record the live scorer would dead-letter is
skipped here for the same reason, and everything else sees the same features.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.contracts.codec import (
    MAX_FIELD_LENGTH,
    DecodeError,
    TimeBounds,
    decode_label,
    decode_transaction,
)
from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import Pipeline, Scored
from stream.devtools.files import read_events
from stream.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record the scorer would dead-letter, with its reason code."""

    reason: str
    error: str


Item = Transaction | Label | Invalid
# (pipeline partition, decoded item, where it came from: a Kafka record, or None for files)
Sourced = tuple[int, Item, Any]
OnScored = Callable[[int, Transaction, Scored, Any], None]


def _as_bytes(event: dict[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else orjson.dumps(event)


def decode_as(kind: str, raw: bytes | None, bounds: TimeBounds | None = None,
              record_ms: int = 0, max_field_length: int = MAX_FIELD_LENGTH) -> Item:
    """Decode one value as a transaction or a label; a contract breach becomes `Invalid`.
    With `bounds`, an event time out of bounds too (as the live intake checks it: against
    the Kafka record timestamp `record_ms`, 0 for none, and the wall clock)."""
    now = time.time() if bounds is not None else 0.0
    try:
        if kind == "transaction":
            return decode_transaction(raw, bounds, record_ms, now, max_field_length)
        return decode_label(raw, bounds, record_ms, now, max_field_length)
    except DecodeError as exc:
        return Invalid(exc.reason, str(exc))


def _timestamp(item: Item) -> float:
    return -math.inf if isinstance(item, Invalid) else item.timestamp


def file_items(path: Path, labels: Path | None = None,
               bounds: TimeBounds | None = None) -> Iterator[Sourced]:
    """Transactions from a CSV / JSON Lines file, merged by event time with an optional labels
    file (one label per line: transaction_id, card_id, is_fraud, timestamp), partition 0.

    Both files are expected in event-time order, as history exports are; the merge then
    applies each label at the moment it became known, never before its transaction. With
    `bounds`, event times too far after the wall clock are invalid (a file has no record
    timestamp, so history of any age is fine), as are epoch seconds sent as milliseconds.
    """
    def read(file: Path, kind: str) -> Iterator[Item]:
        for event in read_events(file):
            yield decode_as(kind, _as_bytes(event), bounds)

    streams = [read(path, "transaction")]
    if labels is not None:
        streams.append(read(labels, "label"))
    for item in heapq.merge(*streams, key=_timestamp):
        yield 0, item, None


def synthetic_items(
    count: int, seed: int = 7, fraud_rate: float = 0.01, *, scenario: str = "realistic",
    delayed_labels: bool = False,
) -> Iterator[Sourced]:
    """The synthetic generator's stream (the one `stream produce` sends), partition 0.

    By default each transaction carries its label (`is_fraud`). With `delayed_labels` the
    transactions come without it, and the labels come as separate `Label` items when they
    become known (`generate_stream`: chargebacks about a week later), merged in event time, as
    `stream produce --labels topic` sends them. `scenario` is parsed by `parse_scenarios`; a bad
    one raises ConfigError at once, before anything is generated.
    """
    from stream.devtools.synthetic import TrafficConfig, generate, generate_stream, parse_scenarios

    try:
        config = TrafficConfig(count, fraud_rate=fraud_rate, seed=seed,
                               scenarios=parse_scenarios(scenario))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not delayed_labels:
        return ((0, decode_as("transaction", orjson.dumps(event)), None)
                for event in generate(config))
    return ((0, decode_as(kind, orjson.dumps(body)), None)
            for kind, body, _pattern in generate_stream(config))


@dataclass(slots=True)
class RunStats:
    """What a batch run did, for the command's summary line and for tests."""

    transactions: int = 0
    labels: int = 0
    learned: int = 0
    held_labels: int = 0
    invalid: Counter[str] = field(default_factory=Counter)

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())


def run_items(
    pipeline: Pipeline, items: Iterable[Sourced], stats: RunStats | None = None,
    on_scored: OnScored | None = None, tick: Callable[..., None] | None = None,
) -> RunStats:
    """Score-then-learn every item in order, exactly as the live loop does."""
    stats = stats if stats is not None else RunStats()
    for partition, item, origin in items:
        if isinstance(item, Transaction):
            stats.transactions += 1
            scored = pipeline.score(item, partition)
            stats.learned += scored.learned
            if on_scored is not None:
                on_scored(partition, item, scored, origin)
            if tick is not None:
                tick(stats.transactions)
        elif isinstance(item, Label):
            stats.labels += 1
            outcome = pipeline.learn_label(item)
            stats.learned += outcome == "learned"
            stats.held_labels += outcome == "held"
        else:
            stats.invalid[item.reason] += 1
    if tick is not None:
        tick(stats.transactions, True)
    return stats
