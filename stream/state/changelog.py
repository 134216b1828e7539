"""The state changelog: one compacted topic, partition N holding input partition N's state.

Record keys say what a record is, so compaction keeps exactly the latest of each:
`m` the model snapshot (model, counters, label queue), `c:<card>` and `n:<merchant>` one
feature row each, `p:<transaction>` a decision-time record awaiting its label; the recent
decisions (for duplicates) and the recently learned labels (for corrections; both in
stream/core/scoring/recent.py) are written a checkpoint at a time, as segments `D:<writer>:<n>`
and `L:<writer>:<n>` with their fronts `D` and `L` (stream/state/segments.py; changelogs
written before segments hold them per transaction, `d:<transaction>` and `l:<transaction>`,
still read). A tombstone
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

Every row read back is untrusted: anyone who can write to the topic can write anything. The
model snapshot is authenticated before it is unpickled (`stream.state.snapshot`); the rows
are plain JSON data and are validated here (a UTF-8 key, JSON, the arity and types of the
row, finite numbers) and by the core against the current feature set (the row widths). A
row that fails is quarantined, not fatal: it is skipped, its key starts afresh as if it had
been evicted, and it is listed in `RestoredState.quarantined` for the scorer to count
(`fraudstream_state_rows_quarantined_total{store,reason}`) and log.
"""

from __future__ import annotations

import binascii
import json
import math
import sys
from array import array
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.errors import ConfigError, FraudStreamError

MODEL_KEY = b"m"
OWNER_KEY = b"o"
VIEW_KEY = b"v"
CARD, MERCHANT, PENDING = b"c:", b"n:", b"p:"
RECENT, LEARNED = b"d:", b"l:"  # per transaction: read, no longer written
RECENT_SEGMENT, LEARNED_SEGMENT = b"D:", b"L:"
RECENT_FRONT, LEARNED_FRONT = b"D", b"L"
Row = list[float]
# Features as `encode_vector` text when the core writes a row, as array("d") when a restore
# reads one (which also reads the JSON arrays of rows written before that).
PendingRow = tuple[str, float, float, Sequence[float] | str]
# A recent decision [seq, time, score, decision, model_state]; a learned label [seq, time,
# is_fraud, merchant, decided_at, features] (the core builds and reads both).
RecentRow = list[Any]
WRITER_HEADER = "application_id"
Stamp = tuple[tuple[str, bytes], ...]
_STORES = {CARD: "card", MERCHANT: "merchant", PENDING: "pending", RECENT: "recent",
           LEARNED: "learned"}
ROW_REASONS = ("not_utf8", "not_json", "bad_shape", "not_finite", "wrong_width")
QUARANTINE_KINDS: tuple[tuple[str, str], ...] = (
    *((store, reason) for store in _STORES.values() for reason in ROW_REASONS),
    ("owner", "not_json"), ("owner", "bad_shape"), ("view", "not_json"), ("view", "bad_shape"),
    ("view", "not_finite"), ("unknown", "unknown_key"))
"""Every (store, reason) a row can be quarantined for: the metric's label values."""


class ForeignStateError(ConfigError):
    """A changelog holds state written by another application, which this one was not told to
    take over: restoring it would run one deployment on another's state."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A changelog row that was skipped: its store, why, its key (as read) and what was
    wrong with it, in words."""

    store: str
    reason: str
    key: bytes
    detail: str


class BadRow(FraudStreamError, ValueError):
    """Why a row cannot be restored; `reason` is one of ROW_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class PartitionChanges:
    """What changed in one partition since its last checkpoint, as plain values."""

    snapshot: bytes
    cards: dict[str, Row] = field(default_factory=dict)
    cards_evicted: list[str] = field(default_factory=list)
    merchants: dict[str, Row] = field(default_factory=dict)
    merchants_evicted: list[str] = field(default_factory=list)
    pending: dict[str, PendingRow | None] = field(default_factory=dict)
    # The recent decisions' and learned labels' segments, fronts and segment tombstones,
    # encoded (stream/state/segments.py).
    segments: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    # The partition's place in the merchant feed: (last sequence number, stream time).
    view: tuple[int, float] | None = None
    # Keys whose last row was quarantined on restore: deleted, so no later restore meets
    # (and counts) them again. Written first: a new value of the same key in this
    # checkpoint comes after, and wins.
    tombstones: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class RestoredState:
    """A partition's state as read back from its changelog partition."""

    snapshot: bytes | None = None
    cards: dict[str, Row] = field(default_factory=dict)
    merchants: dict[str, Row] = field(default_factory=dict)
    pending: dict[str, PendingRow] = field(default_factory=dict)
    recent: dict[str, RecentRow] = field(default_factory=dict)  # per-transaction rows (legacy)
    learned: dict[str, RecentRow] = field(default_factory=dict)
    # Segments by key, in offset order, and the fronts (stream/state/segments.py).
    recent_segments: dict[bytes, dict[str, RecentRow]] = field(default_factory=dict)
    learned_segments: dict[bytes, dict[str, RecentRow]] = field(default_factory=dict)
    recent_front: int | None = None
    learned_front: int | None = None
    view: tuple[int, float] | None = None
    records: int = 0
    # Records per writing application (their `application_id` header), and those without.
    writers: dict[str, int] = field(default_factory=dict)
    unstamped: int = 0
    # Takeovers recorded in the partition (`o` rows): application -> the ones it adopted.
    adoptions: dict[str, set[str]] = field(default_factory=dict)
    # Rows skipped as unreadable, by key, in the order met; a later value or tombstone of
    # the same key supersedes the bad row, which is then not reported (see `quarantined`).
    bad_rows: dict[bytes, Quarantined] = field(default_factory=dict)

    @property
    def quarantined(self) -> list[Quarantined]:
        """The rows skipped whose key's last record was the bad one: what the restore lost."""
        return list(self.bad_rows.values())


def encode_changes(changes: PartitionChanges) -> list[tuple[bytes, bytes | None]]:
    """Key/value pairs for the changelog; rows before the model so a reader never sees a
    model newer than its features within one committed checkpoint."""
    out: list[tuple[bytes, bytes | None]] = [(k, None) for k in changes.tombstones]
    dumps = orjson.dumps
    out.extend((CARD + k.encode(), dumps(v)) for k, v in changes.cards.items())
    out.extend((CARD + k.encode(), None) for k in changes.cards_evicted)
    out.extend((MERCHANT + k.encode(), dumps(v)) for k, v in changes.merchants.items())
    out.extend((MERCHANT + k.encode(), None) for k in changes.merchants_evicted)
    out.extend((PENDING + k.encode(), None if v is None else dumps(v))
               for k, v in changes.pending.items())
    out.extend(changes.segments)
    if changes.view is not None:
        out.append((VIEW_KEY, dumps(changes.view)))
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
    """Apply one changelog record: the last value of a key wins, a tombstone deletes it, and
    a row that cannot be read is quarantined (its key forgotten). `writer` is the record's
    stamp (`writer_of` its headers), counted for `check_ownership`.

    >>> state = RestoredState()
    >>> fold(state, b"c:card-1", b"[5.0, 1.0]")
    >>> fold(state, b"c:card-2", b"[5.0, NaN]")
    >>> fold(state, b"p:" + bytes([255]), b"[]")
    >>> state.cards, [(q.store, q.reason) for q in state.quarantined]
    ({'card-1': [5.0, 1.0]}, [('card', 'not_finite'), ('pending', 'not_utf8')])
    >>> fold(state, b"c:card-2", b"[6.0, 1.0]")  # a later good value: nothing was lost
    >>> [(q.store, q.reason) for q in state.quarantined]
    [('pending', 'not_utf8')]
    """
    state.records += 1
    if state.bad_rows:
        state.bad_rows.pop(key, None)  # superseded by this record
    if writer is None:
        state.unstamped += 1
    else:
        state.writers[writer] = state.writers.get(writer, 0) + 1
    if key == MODEL_KEY:
        state.snapshot = value
        return
    if key == VIEW_KEY:
        try:
            state.view = _view_row(value)
        except BadRow as bad:  # the partition resumes its feed numbering from the feed
            state.view = None
            _quarantine(state, Quarantined("view", bad.reason, key, str(bad)))
        return
    if key[:2] in _SEGMENTS or key in _FRONTS:
        _fold_memory(state, key, value)
        return
    if key == OWNER_KEY:
        if value is not None:
            try:
                app, adopted = owner_of(value)
            except BadRow as bad:
                _quarantine(state, Quarantined("owner", bad.reason, key, str(bad)))
                return
            state.adoptions.setdefault(app, set()).update(adopted)
        return
    store = _STORES.get(key[:2])
    # A tombstone of a key that cannot be restored (one quarantined before, `forget_rows`)
    # deletes nothing, and is no bad row.
    if store is None:
        if value is not None:
            _quarantine(state, Quarantined("unknown", "unknown_key", key,
                                           "not a changelog key (c:, n:, p:, d:, l:, D:, L:, "
                                           "D, L, m, o or v)"))
        return
    try:
        name = key[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        if value is not None:
            _quarantine(state, Quarantined(store, "not_utf8", key, str(exc)))
        return
    target, read = _TARGETS[key[:2]](state)
    if value is None:
        target.pop(name, None)
        return
    try:
        target[name] = read(value)
    except BadRow as bad:
        target.pop(name, None)  # its last value is unreadable: the key starts afresh
        _quarantine(state, Quarantined(store, bad.reason, key, str(bad)))


def _fold_memory(state: RestoredState, key: bytes, value: bytes | None) -> None:
    """A segment or a front of the recent decisions or learned labels (segments.py)."""
    if key in _FRONTS:
        store = _FRONTS[key]
        front = None
        if value is not None:
            try:
                front = _sequence(_json(value), f"{store} front")
            except BadRow as bad:  # every row is kept: the window and size bound still apply
                _quarantine(state, Quarantined(store, bad.reason, key, str(bad)))
        setattr(state, f"{store}_front", front)
        return
    store, check = _SEGMENTS[key[:2]]
    segments: dict[bytes, dict[str, RecentRow]] = getattr(state, f"{store}_segments")
    segments.pop(key, None)  # a rewritten key goes to its new place in offset order
    if value is None:
        return
    try:
        segments[key] = segment_rows(value, check, store)
    except BadRow as bad:  # its rows start afresh, as if forgotten
        _quarantine(state, Quarantined(store, bad.reason, key, str(bad)))


def segment_rows(value: bytes, check: Callable[[Any], RecentRow],
                 what: str) -> dict[str, RecentRow]:
    """A segment: a JSON object of transaction id -> row, every row valid, or BadRow.

    >>> segment_rows(b'{"t1": [7, 1.0, 0.25, "review", "ready"]}', _recent, "recent")
    {'t1': [7, 1.0, 0.25, 'review', 'ready']}
    >>> segment_rows(b'{"t1": [7]}', _recent, "recent")
    Traceback (most recent call last):
    stream.state.changelog.BadRow: recent segment, row 't1': recent decision has 1 fields, not 5
    """
    decoded = _json(value)
    if not isinstance(decoded, dict):
        raise BadRow("bad_shape", f"{what} segment is not a JSON object")
    rows: dict[str, RecentRow] = {}
    for tx_id, row in decoded.items():
        try:
            rows[tx_id] = check(row)
        except BadRow as bad:
            raise BadRow(bad.reason, f"{what} segment, row {tx_id[:64]!r}: {bad}") from None
    return rows


def _quarantine(state: RestoredState, row: Quarantined) -> None:
    state.bad_rows[row.key] = row


def _json(value: bytes) -> Any:
    """orjson, else the standard module: it reads what a Python writer makes of NaN and
    infinities (`NaN`, `Infinity`, `1e999`), so those rows are called not finite, not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise BadRow("not_json", f"not JSON: {exc}") from None


def _numbers(value: Any, what: str) -> list[float]:
    """A non-empty JSON array of finite numbers (a bool is not a number here)."""
    if not isinstance(value, list) or not value:
        raise BadRow("bad_shape", f"{what} is not a non-empty array")
    out: list[float] = []
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise BadRow("bad_shape", f"{what} holds a {type(number).__name__}, not a number")
        try:
            as_float = float(number)
        except OverflowError:  # an integer beyond a double's range
            as_float = math.inf
        if not math.isfinite(as_float):
            raise BadRow("not_finite", f"{what} holds a number that is not finite")
        out.append(as_float)
    return out


_BIG_ENDIAN = sys.byteorder == "big"


def encode_vector(values: array[float]) -> str:
    """Decision-time features as the changelog writes them (pending records, learned
    labels): base64 of their IEEE doubles, little-endian. The same numbers, bit for bit, as
    a JSON array's shortest round-trip text, encoded in half the time (no float objects, no
    float-to-text; 2.4 against 4.7 us for the 31 features of the bench's events) and in a
    tenth fewer bytes (334 against 376): every labelled event writes one or two such rows.

    >>> encode_vector(array("d", [1.0, 0.5]))
    'AAAAAAAA8D8AAAAAAADgPw=='
    >>> _packed(encode_vector(array("d", [1.0, 0.5])), "row")
    array('d', [1.0, 0.5])
    """
    if _BIG_ENDIAN:
        values = array("d", values)
        values.byteswap()
    return b64encode(values.tobytes()).decode("ascii")



def _packed(value: Any, what: str) -> array[float]:
    """Decision-time features read back: `encode_vector`'s text, or (as rows written before
    it) a JSON array of numbers (`_numbers`), as a packed array. A restore holds tens of
    thousands of them (pending records, learned labels) until the state is built. As lists
    of float objects they took about 1.2 KB each, freed only after the whole restore, and
    the process kept most of that memory after it (the soak's RSS stepped up at every
    rewind); packed, 8 bytes a number, and the floats are freed row by row.

    >>> _packed([1, 2.5], "row")
    array('d', [1.0, 2.5])
    >>> _packed("AAAAAAAA8H8=", "row")  # +inf
    Traceback (most recent call last):
    stream.state.changelog.BadRow: row holds a number that is not finite
    >>> _packed("AAAA", "row")
    Traceback (most recent call last):
    stream.state.changelog.BadRow: row is not base64 of 8-byte numbers
    """
    if not isinstance(value, str):
        return array("d", _numbers(value, what))
    try:
        raw = b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRow("bad_shape", f"{what} is not base64 of 8-byte numbers") from None
    if not raw or len(raw) % 8:
        raise BadRow("bad_shape", f"{what} is not base64 of 8-byte numbers")
    out = array("d")
    out.frombytes(raw)
    if _BIG_ENDIAN:
        out.byteswap()
    if not all(map(math.isfinite, out)):
        raise BadRow("not_finite", f"{what} holds a number that is not finite")
    return out


def feature_row(value: bytes) -> Row:
    """A card or merchant row: a JSON array of finite numbers (the width is the core's to
    check, against its feature set).

    >>> feature_row(b"[1, 2.5]")
    [1.0, 2.5]
    >>> feature_row(b'[1, "2"]')
    Traceback (most recent call last):
    stream.state.changelog.BadRow: row holds a str, not a number
    """
    return _numbers(_json(value), "row")


def pending_row(value: bytes) -> PendingRow:
    """A decision-time record: `[merchant_id, timestamp, score, features]`, the features
    `encode_vector`'s text (or a JSON array of numbers, as written before it).

    >>> pending_row(b'["m1", 1700000000.0, 0.25, [1.0, 0.0]]')
    ('m1', 1700000000.0, 0.25, array('d', [1.0, 0.0]))
    >>> pending_row(b'["m1", 1.0, 0.25]')
    Traceback (most recent call last):
    stream.state.changelog.BadRow: pending record has 3 fields, not 4
    """
    decoded = _json(value)
    if not isinstance(decoded, list) or len(decoded) != 4:
        size = len(decoded) if isinstance(decoded, list) else type(decoded).__name__
        raise BadRow("bad_shape", f"pending record has {size} fields, not 4")
    merchant, timestamp, score, features = decoded
    if not isinstance(merchant, str):
        raise BadRow("bad_shape", "pending record's merchant id is not a string")
    ts, sc = _numbers([timestamp, score], "pending record's time and score")
    return merchant, ts, sc, _packed(features, "pending record's features")


def recent_row(value: bytes) -> RecentRow:
    """A recent decision: `[seq, time, score, decision, model_state]`.

    >>> recent_row(b'[7, 1700000000.0, 0.25, "review", "ready"]')
    [7, 1700000000.0, 0.25, 'review', 'ready']
    >>> recent_row(b'[7, 1700000000.0, 0.25, "maybe", "ready"]')
    Traceback (most recent call last):
    stream.state.changelog.BadRow: recent decision is not one of approve, review, decline
    """
    return _recent(_json(value))


def _recent(decoded: Any) -> RecentRow:
    if not isinstance(decoded, list) or len(decoded) != 5:
        size = len(decoded) if isinstance(decoded, list) else type(decoded).__name__
        raise BadRow("bad_shape", f"recent decision has {size} fields, not 5")
    seq, timestamp, score, decision, model_state = decoded
    if decision not in ("approve", "review", "decline"):
        raise BadRow("bad_shape", "recent decision is not one of approve, review, decline")
    if model_state not in ("warming", "ready"):
        raise BadRow("bad_shape", "recent decision's model state is not warming or ready")
    return [_sequence(seq, "recent decision"),
            *_numbers([timestamp, score], "recent decision's time and score"),
            decision, model_state]


def learned_row(value: bytes) -> RecentRow:
    """A learned label: `[seq, time, is_fraud, merchant_id, decided_at, features]`, the
    features `encode_vector`'s text (or a JSON array of numbers, as written before it).

    >>> learned_row(b'[3, 1700000000.0, true, "m1", 1699999000.0, [1.0, 0.5]]')
    [3, 1700000000.0, True, 'm1', 1699999000.0, array('d', [1.0, 0.5])]
    """
    return _learned(_json(value))


def _learned(decoded: Any) -> RecentRow:
    if not isinstance(decoded, list) or len(decoded) != 6:
        size = len(decoded) if isinstance(decoded, list) else type(decoded).__name__
        raise BadRow("bad_shape", f"learned label has {size} fields, not 6")
    seq, timestamp, is_fraud, merchant, decided_at, features = decoded
    if not isinstance(is_fraud, bool) or not isinstance(merchant, str):
        raise BadRow("bad_shape", "learned label's label or merchant id has the wrong type")
    ts, decided = _numbers([timestamp, decided_at], "learned label's times")
    return [_sequence(seq, "learned label"), ts, is_fraud, merchant, decided,
            _packed(features, "learned label's features")]


def _sequence(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRow("bad_shape", f"{what}'s sequence number is not a count")
    return value


# Per row key prefix: where a restore keeps its rows, and how one is read (BadRow if not).
_TARGETS: dict[bytes, Callable[[RestoredState], tuple[dict[str, Any],
                                                       Callable[[bytes], Any]]]] = {
    CARD: lambda state: (state.cards, feature_row),
    MERCHANT: lambda state: (state.merchants, feature_row),
    PENDING: lambda state: (state.pending, pending_row),
    RECENT: lambda state: (state.recent, recent_row),
    LEARNED: lambda state: (state.learned, learned_row),
}
_SEGMENTS: dict[bytes, tuple[str, Callable[[Any], RecentRow]]] = {
    RECENT_SEGMENT: ("recent", _recent), LEARNED_SEGMENT: ("learned", _learned)}
_FRONTS = {RECENT_FRONT: "recent", LEARNED_FRONT: "learned"}


def owner_of(value: bytes) -> tuple[str, list[str]]:
    """An `o` row: the application, and the applications it adopted.

    >>> owner_of(owner_record("green", ["blue"])[1])
    ('green', ['blue'])
    """
    decoded = _json(value)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("app"), str):
        raise BadRow("bad_shape", "owner record is not an object with an application")
    adopted = decoded.get("adopted", [])
    if not isinstance(adopted, list) or not all(isinstance(app, str) for app in adopted):
        raise BadRow("bad_shape", "owner record's adopted applications are not strings")
    return decoded["app"], adopted


def _view_row(value: bytes | None) -> tuple[int, float] | None:
    """The `v` row: [sequence number, stream time (null: none yet)]; anything else is
    refused (untrusted).

    >>> _view_row(b"[12, 1700000000.5]"), _view_row(b"[0, null]")
    ((12, 1700000000.5), (0, -inf))
    """
    if value is None:
        return None
    row: Any = _json(value)
    if (not isinstance(row, list) or len(row) != 2 or isinstance(row[0], bool)
            or not isinstance(row[0], int) or row[0] < 0 or isinstance(row[1], bool)
            or not (row[1] is None or isinstance(row[1], int | float))):
        raise BadRow("bad_shape", "the merchant view row must be [sequence number >= 0, "
                     "stream time or null]")
    if row[1] is not None and not math.isfinite(row[1]):
        raise BadRow("not_finite", "the merchant view row's stream time is not finite")
    return row[0], float("-inf") if row[1] is None else float(row[1])


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
            "recent": len(state.recent), "learned": len(state.learned),
            "quarantined": len(state.quarantined)}
