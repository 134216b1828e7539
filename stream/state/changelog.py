"""The state changelog: one compacted topic, partition N holding input partition N's state.

Record keys say what a record is, so compaction keeps exactly the latest of each:
`m` the model snapshot (model, counters, label queue), `c:<card>` and `n:<merchant>` one
feature row each, `p:<transaction>` a decision-time record awaiting its label. A tombstone
(null value) deletes an evicted key. Restoring a partition is reading its changelog
partition to the end (read_committed, so aborted checkpoints are never restored) and keeping
the last value per key, as Kafka Streams does: `fold` here, the reading in stream/kafka/restore.py.
Pure: bytes in, plain values out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("stream.changelog")

MODEL_KEY = b"m"
CARD, MERCHANT, PENDING = b"c:", b"n:", b"p:"
Row = list[float]
PendingRow = tuple[str, float, float, list[float]]


@dataclass(slots=True)
class PartitionChanges:
    """What changed in one partition since its last checkpoint, as plain values."""

    snapshot: bytes
    cards: dict[str, Row] = field(default_factory=dict)
    cards_evicted: list[str] = field(default_factory=list)
    merchants: dict[str, Row] = field(default_factory=dict)
    merchants_evicted: list[str] = field(default_factory=list)
    pending: dict[str, PendingRow | None] = field(default_factory=dict)


@dataclass(slots=True)
class RestoredState:
    """A partition's state as read back from its changelog partition."""

    snapshot: bytes | None = None
    cards: dict[str, Row] = field(default_factory=dict)
    merchants: dict[str, Row] = field(default_factory=dict)
    pending: dict[str, PendingRow] = field(default_factory=dict)
    records: int = 0


def encode_changes(changes: PartitionChanges) -> list[tuple[bytes, bytes | None]]:
    """Key/value pairs for the changelog; rows before the model so a reader never sees a
    model newer than its features within one committed checkpoint."""
    out: list[tuple[bytes, bytes | None]] = []
    dumps = orjson.dumps
    out.extend((CARD + k.encode(), dumps(v)) for k, v in changes.cards.items())
    out.extend((CARD + k.encode(), None) for k in changes.cards_evicted)
    out.extend((MERCHANT + k.encode(), dumps(v)) for k, v in changes.merchants.items())
    out.extend((MERCHANT + k.encode(), None) for k in changes.merchants_evicted)
    out.extend((PENDING + k.encode(), None if v is None else dumps(v))
               for k, v in changes.pending.items())
    out.append((MODEL_KEY, changes.snapshot))
    return out


def fold(state: RestoredState, key: bytes, value: bytes | None) -> None:
    """Apply one changelog record: the last value of a key wins, a tombstone deletes it."""
    state.records += 1
    if key == MODEL_KEY:
        state.snapshot = value
        return
    prefix, name = key[:2], key[2:].decode()
    target: dict[str, Any]
    if prefix == CARD:
        target = state.cards
    elif prefix == MERCHANT:
        target = state.merchants
    elif prefix == PENDING:
        target = state.pending
    else:
        log.warning("ignoring unknown changelog key %r", key[:40])
        return
    if value is None:
        target.pop(name, None)
        return
    decoded: Any = orjson.loads(value)
    if prefix == PENDING:
        decoded = tuple(decoded)
    target[name] = decoded


def to_records(
    topic: str, partition: int, pairs: Iterable[tuple[bytes, bytes | None]]
) -> list[tuple[str, int, bytes, bytes | None]]:
    """(topic, partition, key, value) tuples ready for producer.send."""
    return [(topic, partition, key, value) for key, value in pairs]


def summarize(state: RestoredState) -> Mapping[str, int]:
    return {"records": state.records, "cards": len(state.cards),
            "merchants": len(state.merchants), "pending": len(state.pending)}
