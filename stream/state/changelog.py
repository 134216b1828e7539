"""The state changelog: one compacted topic, partition N holding input partition N's state.

Record keys say what a record is, so compaction keeps exactly the latest of each:
`m` the model snapshot (model, counters, label queue), `c:<card>` and `n:<merchant>` one
feature row each, `p:<transaction>` a decision-time record awaiting its label, `d:<transaction>`
a recent decision (for duplicates) and `l:<transaction>` a recently learned label (for
corrections; both in stream/core/scoring/recent.py). A tombstone
(null value) deletes an evicted key. Restoring a partition is reading its changelog
partition to the end (read_committed, so aborted checkpoints are never restored) and keeping
the last value per key, as Kafka Streams does: `fold` here, the reading in stream/kafka/restore.py.
Pure: bytes in, plain values out.

Every record carries the id of the application that wrote it, in its `application_id` header
(`stamp`), and a restore refuses state another application wrote (`check_ownership`), so two
deployments pointed at one changelog never run on each other's state. Records without the
header were written before applications had ids: they are accepted as the reader's own
(legacy). An application told to take over another's state (`adopt_state_from`) records the
takeover in its partitions' `o` key (`owner_record`): later restores accept the adopted rows
without being told again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.errors import ConfigError

log = logging.getLogger("stream.changelog")

MODEL_KEY = b"m"
OWNER_KEY = b"o"
CARD, MERCHANT, PENDING = b"c:", b"n:", b"p:"
RECENT, LEARNED = b"d:", b"l:"
Row = list[float]
PendingRow = tuple[str, float, float, list[float]]
# A recent decision [seq, time, score, decision, model_state]; a learned label [seq, time,
# is_fraud, merchant, decided_at, features] (the core builds and reads both).
RecentRow = list[Any]
WRITER_HEADER = "application_id"
Stamp = tuple[tuple[str, bytes], ...]


class ForeignStateError(ConfigError):
    """A changelog holds state written by another application, which this one was not told to
    take over: restoring it would run one deployment on another's state."""


@dataclass(slots=True)
class PartitionChanges:
    """What changed in one partition since its last checkpoint, as plain values."""

    snapshot: bytes
    cards: dict[str, Row] = field(default_factory=dict)
    cards_evicted: list[str] = field(default_factory=list)
    merchants: dict[str, Row] = field(default_factory=dict)
    merchants_evicted: list[str] = field(default_factory=list)
    pending: dict[str, PendingRow | None] = field(default_factory=dict)
    recent: dict[str, RecentRow | None] = field(default_factory=dict)
    learned: dict[str, RecentRow | None] = field(default_factory=dict)


@dataclass(slots=True)
class RestoredState:
    """A partition's state as read back from its changelog partition."""

    snapshot: bytes | None = None
    cards: dict[str, Row] = field(default_factory=dict)
    merchants: dict[str, Row] = field(default_factory=dict)
    pending: dict[str, PendingRow] = field(default_factory=dict)
    recent: dict[str, RecentRow] = field(default_factory=dict)
    learned: dict[str, RecentRow] = field(default_factory=dict)
    records: int = 0
    # Records per writing application (their `application_id` header), and those without.
    writers: dict[str, int] = field(default_factory=dict)
    unstamped: int = 0
    # Takeovers recorded in the partition (`o` rows): application -> the ones it adopted.
    adoptions: dict[str, set[str]] = field(default_factory=dict)


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
    out.extend((RECENT + k.encode(), None if v is None else dumps(v))
               for k, v in changes.recent.items())
    out.extend((LEARNED + k.encode(), None if v is None else dumps(v))
               for k, v in changes.learned.items())
    out.append((MODEL_KEY, changes.snapshot))
    return out


def stamp(application_id: str) -> Stamp:
    """The headers of every changelog record an application writes.

    >>> writer_of(stamp("fraud-stream")), writer_of(())
    ('fraud-stream', None)
    """
    return ((WRITER_HEADER, application_id.encode()),)


def writer_of(headers: Iterable[tuple[str, bytes | None]]) -> str | None:
    """The application that wrote a record, None for a record from before the stamp."""
    for name, value in headers:
        if name == WRITER_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def fold(state: RestoredState, key: bytes, value: bytes | None,
         writer: str | None = None) -> None:
    """Apply one changelog record: the last value of a key wins, a tombstone deletes it.
    `writer` is the record's stamp (`writer_of` its headers), counted for `check_ownership`."""
    state.records += 1
    if writer is None:
        state.unstamped += 1
    else:
        state.writers[writer] = state.writers.get(writer, 0) + 1
    if key == MODEL_KEY:
        state.snapshot = value
        return
    if key == OWNER_KEY:
        if value is not None:
            owner: dict[str, Any] = orjson.loads(value)
            state.adoptions.setdefault(str(owner["app"]), set()).update(
                str(app) for app in owner.get("adopted", ()))
        return
    prefix, name = key[:2], key[2:].decode()
    target: dict[str, Any]
    if prefix == CARD:
        target = state.cards
    elif prefix == MERCHANT:
        target = state.merchants
    elif prefix == PENDING:
        target = state.pending
    elif prefix == RECENT:
        target = state.recent
    elif prefix == LEARNED:
        target = state.learned
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


@dataclass(frozen=True, slots=True)
class Ownership:
    """Whose rows a restored partition holds, once they are accepted: `legacy` rows carry no
    stamp; `adopting` is an application taken over by this restore, to be recorded with
    `owner_record(application, adopted)`."""

    legacy: int = 0
    adopting: str | None = None
    adopted: tuple[str, ...] = ()


def check_ownership(state: RestoredState, application_id: str, adopt_from: str | None,
                    where: str) -> Ownership:
    """Refuse a partition holding rows another application wrote (ForeignStateError, naming
    both and the setting that allows it), unless this application adopts them: by
    `adopt_from` now, or by a takeover recorded earlier. Adopting an application adopts what
    it had adopted itself.

    >>> mine = RestoredState(writers={"green": 5, "blue": 7})
    >>> check_ownership(mine, "green", "blue", "t[0]")
    Ownership(legacy=0, adopting='blue', adopted=('blue',))
    >>> check_ownership(mine, "green", None, "t[0]")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    stream.state.changelog.ForeignStateError: t[0] holds state written by application 'blue' ...
    """
    recorded = _adopted_by(application_id, state.adoptions)
    told = _adopted_by(adopt_from, state.adoptions) if adopt_from else set()
    foreign = {app: n for app, n in state.writers.items() if app not in recorded | told}
    if foreign:
        raise ForeignStateError(_refusal(where, foreign, application_id))
    if adopt_from is None or adopt_from in recorded or adopt_from not in state.writers:
        return Ownership(state.unstamped, None, tuple(sorted(recorded - {application_id})))
    adopted = tuple(sorted((recorded | told) - {application_id}))
    return Ownership(state.unstamped, adopt_from, adopted)


def _adopted_by(application: str, adoptions: Mapping[str, set[str]]) -> set[str]:
    """The application and every one it took over, directly or through another."""
    found, todo = {application}, [application]
    while todo:
        for app in adoptions.get(todo.pop(), ()):
            if app not in found:
                found.add(app)
                todo.append(app)
    return found


def _refusal(where: str, foreign: Mapping[str, int], application_id: str) -> str:
    apps = sorted(foreign)
    written = ", ".join(f"{app!r} ({foreign[app]:,} records)" for app in apps)
    plural = "s" if len(apps) > 1 else ""
    return (f"{where} holds state written by application{plural} {written}; this scorer is "
            f"application {application_id!r} and never restores another application's state: "
            f"give it a changelog of its own (leave changelog_topic unset: it is then "
            f"'{application_id}.changelog'), or take that state over with adopt_state_from = "
            f"\"{apps[0]}\" (--adopt-state-from {apps[0]})")


def owner_record(application_id: str, adopted: Iterable[str]) -> tuple[bytes, bytes]:
    """The `o` row recording that `application_id` took over the state of `adopted`."""
    return OWNER_KEY, orjson.dumps({"app": application_id, "adopted": sorted(adopted)})


def to_records(
    topic: str, partition: int, pairs: Iterable[tuple[bytes, bytes | None]]
) -> list[tuple[str, int, bytes, bytes | None]]:
    """(topic, partition, key, value) tuples ready for producer.send."""
    return [(topic, partition, key, value) for key, value in pairs]


def summarize(state: RestoredState) -> Mapping[str, int]:
    return {"records": state.records, "cards": len(state.cards),
            "merchants": len(state.merchants), "pending": len(state.pending),
            "recent": len(state.recent), "learned": len(state.learned)}
