"""Versioned, authenticated snapshots of one partition's learned state: model, features,
label queues.

Layout (format 2): `MAGIC`, the header's length, a JSON header with the versions, a 32-byte
HMAC-SHA256 tag, then the pickled body. The tag covers everything else (magic, header and
body) under the application's state key (`stream.state.keys`). Pickle executes code on load,
and snapshots are read back from a Kafka topic and from files that others may be able to
write, so `decode_snapshot` checks, in this order and before anything is unpickled: the magic
bytes, the header (plain JSON), the format, that a key is configured, that a tag is there, and
that it matches (`hmac.compare_digest`). Anything else is refused with a `SnapshotError` that
says why; the CLI prints it as one line.

A snapshot written by one build and read by another is only used when both agree on the
snapshot format and on River's version (a different River may unpickle into a silently
different model). Format 1 (unsigned) is refused: re-train or replay to rebuild the state.

>>> from stream.state.keys import StateKey
>>> key = StateKey.from_text("k" * 32, "doctest")
>>> raw = encode_snapshot(PartitionSnapshot(0, None, 0.0, 3, 1), key)
>>> decode_snapshot(raw, key).events
3
>>> decode_snapshot(raw[:-1] + bytes([raw[-1] ^ 1]), key)  # doctest: +ELLIPSIS
Traceback (most recent call last):
stream.state.snapshot.StateAuthenticationError: snapshot failed authentication: ...
"""

from __future__ import annotations

import functools
import pickle
import struct
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from stream.errors import FraudStreamError
from stream.state.keys import TAG_SIZE, StateKey

MAGIC = b"FSNAP"
FORMAT_VERSION = 2
"""2: HMAC-SHA256 tag after the header (1: unsigned, no longer read)."""
_HEADER = struct.Struct(">I")
_SETTINGS = "state_key_file or FRAUDSTREAM_STATE_KEY"


class SnapshotError(FraudStreamError, ValueError):
    """A snapshot that cannot be used: corrupt, or written by an incompatible build."""


class StateAuthenticationError(SnapshotError):
    """A snapshot that cannot be shown to come from a holder of the state key: no key to
    check it with, no tag, or a tag that does not match. It is never unpickled."""


@functools.cache
def _version(package: str) -> str:
    """Installed version; cached, since reading package metadata scans site-packages (about
    0.4 ms, and every checkpoint writes a snapshot per partition)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@dataclass(slots=True)
class PartitionSnapshot:
    """Everything one partition has learned, as plain data plus the pickled River model.

    `features` may be empty when the feature rows travel separately (the changelog writes
    them as one record per card); `pending` holds decision-time records awaiting labels.
    """

    partition: int
    model: Any
    clock: float
    events: int
    learned: int
    due: list[tuple[float, int, str, bool]] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    pending: list[tuple[str, str, float, float, list[float]]] = field(default_factory=list)
    model_name: str = ""
    offsets: dict[str, int] = field(default_factory=dict)
    # Challenger models by name (shadow scoring); last, so snapshots written before it
    # existed still unpickle (read it with getattr(snapshot, "challengers", {})).
    challengers: dict[str, Any] = field(default_factory=dict)


def encode_signed(magic: bytes, fields: dict[str, Any], body: Any, key: StateKey) -> bytes:
    """`magic`, the header's length, a JSON header (format, MAC, key id and versions, then
    `fields`), the tag, the pickled `body`: the framing of every signed state object (a
    partition snapshot here, a merchant table image in state/table_image.py)."""
    header = orjson.dumps({
        "format": FORMAT_VERSION,
        "mac": "hmac-sha256",
        "key_id": key.key_id,
        "river": _version("river"),
        "package": _version("fraud-stream"),
        **fields,
    })
    pickled = pickle.dumps(body, protocol=pickle.HIGHEST_PROTOCOL)
    head = magic + _HEADER.pack(len(header)) + header
    return head + key.sign(head, pickled) + pickled


def encode_snapshot(snapshot: PartitionSnapshot, key: StateKey) -> bytes:
    """MAGIC, the header's length, a JSON header with the versions, the tag, the pickled body."""
    return encode_signed(MAGIC, {
        "partition": snapshot.partition,
        "events": snapshot.events,
        "learned": snapshot.learned,
        "model_name": snapshot.model_name,
    }, snapshot, key)


def read_header(raw: bytes, magic: bytes = MAGIC) -> dict[str, Any]:
    """The header alone (cheap, plain JSON, nothing unpickled; not yet authenticated).
    `magic`: what the bytes must start with (a table image has its own, state/table_image.py)."""
    if not raw.startswith(magic) or len(raw) < len(magic) + _HEADER.size:
        raise SnapshotError("not a fraud-stream snapshot (bad magic bytes)")
    (size,) = _HEADER.unpack_from(raw, len(magic))
    start = len(magic) + _HEADER.size
    try:
        header: Any = orjson.loads(raw[start:start + size])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"corrupt snapshot header: {exc}") from None
    if not isinstance(header, dict):
        raise SnapshotError("corrupt snapshot header: not a JSON object")
    return header


def check_format(header: dict[str, Any]) -> None:
    """Refuse snapshots of another format, saying which (format 1 was not signed)."""
    if header.get("format") == 1:
        raise SnapshotError(
            f"snapshot format 1 is not supported: it is not signed, and this build only "
            f"unpickles snapshots authenticated with the state key (format {FORMAT_VERSION}); "
            "re-train or replay to rebuild the state")
    if header.get("format") != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format {header.get('format')} is not supported (this build reads "
            f"format {FORMAT_VERSION}); re-train or replay to rebuild the state"
        )


def check_compatible(header: dict[str, Any]) -> None:
    """Refuse snapshots from another format or River minor version, saying which."""
    check_format(header)
    here, there = _version("river"), str(header.get("river"))
    if _minor(here) != _minor(there):
        raise SnapshotError(
            f"snapshot was written with River {there}, this build runs River {here}; "
            "models do not transfer across River versions: re-train or replay"
        )


def authenticate(raw: bytes, key: StateKey | None, where: str = "snapshot",
                 magic: bytes = MAGIC) -> int:
    """Check `raw`'s tag under `key`; return where the body starts. Plain bytes and JSON only:
    nothing is unpickled here, so a forged snapshot runs nothing. StateAuthenticationError
    when there is no key, no tag, or a tag that does not match."""
    try:
        header = read_header(raw, magic)
        check_format(header)
    except SnapshotError as exc:
        raise SnapshotError(f"{where}: {exc}") from None
    if key is None:
        raise StateAuthenticationError(
            f"{where} cannot be authenticated: no state key is configured ({_SETTINGS}); "
            "snapshots are never unpickled unauthenticated")
    (size,) = _HEADER.unpack_from(raw, len(magic))
    tag_at = len(magic) + _HEADER.size + size
    body_at = tag_at + TAG_SIZE
    if len(raw) < body_at:
        raise StateAuthenticationError(f"{where} carries no authentication tag: refused")
    view = memoryview(raw)
    if key.verifying(raw[tag_at:body_at], view[:tag_at], view[body_at:]) is None:
        retiring = "".join(f", previous key id {k.key_id}" for k in key.previous)
        raise StateAuthenticationError(
            f"{where} failed authentication: its tag does not match the state key of this "
            f"scorer (key id {key.key_id}, from {key.source}{retiring}; the snapshot names "
            f"key id {str(header.get('key_id'))[:12]!r}); it was written with another key, or "
            f"altered, and is refused unread. Every instance of an application must share "
            f"one state key ({_SETTINGS})")
    return body_at


def signed_with_previous(raw: bytes, key: StateKey | None) -> bool:
    """Whether an authenticated snapshot was signed by one of `key`'s previous keys (its
    header, covered by the tag, names the key): state to re-sign with the current key."""
    return key is not None and read_header(raw).get("key_id") != key.key_id


def decode_signed(raw: bytes, key: StateKey | None, where: str, magic: bytes = MAGIC) -> Any:
    """Authenticate, check versions, then unpickle (`encode_signed`'s framing); any failure
    is a SnapshotError with the reason, prefixed by `where`."""
    body_at = authenticate(raw, key, where, magic)
    try:
        check_compatible(read_header(raw, magic))
    except SnapshotError as exc:
        raise SnapshotError(f"{where}: {exc}") from None
    try:
        return pickle.loads(raw[body_at:])
    except Exception as exc:  # an authenticated body from an incompatible build, say
        raise SnapshotError(f"corrupt {where} body: {type(exc).__name__}: {exc}") from None


def decode_snapshot(raw: bytes, key: StateKey | None,
                    where: str = "snapshot") -> PartitionSnapshot:
    """Authenticate, check versions, then unpickle; any failure is a SnapshotError with the
    reason, prefixed by `where` (a file, a changelog partition)."""
    snapshot = decode_signed(raw, key, where)
    if not isinstance(snapshot, PartitionSnapshot):
        raise SnapshotError(f"{where} body is not a PartitionSnapshot")
    return snapshot


def save_snapshot(path: Path, snapshot: PartitionSnapshot, key: StateKey) -> None:
    """Write atomically: a crash mid-write never leaves a half snapshot under the name."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_snapshot(snapshot, key))
    tmp.replace(path)


def load_snapshot(path: Path, key: StateKey | None) -> PartitionSnapshot:
    """A snapshot file, authenticated with `key` before it is unpickled."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"snapshot not found: {path}") from None
    return decode_snapshot(raw, key, f"snapshot {path}")
