"""Versioned snapshots of one partition's learned state: model, features, label queues.

A snapshot written by one build and read by another is only trusted when both agree on the
snapshot format and on River's version (River models are pickled: a different River may
unpickle into a silently different model). Anything else is refused with a message that
says which versions differ, so a deploy fails loudly instead of scoring with garbage.

Pickle executes code on load: snapshots must come from a trusted source (our own changelog
topic or a file we wrote), like any model artefact.
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

MAGIC = b"FSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">I")


class SnapshotError(FraudStreamError, ValueError):
    """A snapshot that cannot be used: corrupt, or written by an incompatible build."""


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


def encode_snapshot(snapshot: PartitionSnapshot) -> bytes:
    """MAGIC, a JSON header with the versions, then the pickled body."""
    header = orjson.dumps({
        "format": FORMAT_VERSION,
        "river": _version("river"),
        "package": _version("fraud-stream"),
        "partition": snapshot.partition,
        "events": snapshot.events,
        "learned": snapshot.learned,
        "model_name": snapshot.model_name,
    })
    body = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _HEADER.pack(len(header)) + header + body


def read_header(raw: bytes) -> dict[str, Any]:
    """The header alone (cheap): for compatibility checks and `stream compare` reports."""
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _HEADER.size:
        raise SnapshotError("not a fraud-stream snapshot (bad magic bytes)")
    (size,) = _HEADER.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _HEADER.size
    try:
        header: dict[str, Any] = orjson.loads(raw[start:start + size])
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"corrupt snapshot header: {exc}") from None
    return header


def check_compatible(header: dict[str, Any]) -> None:
    """Refuse snapshots from another format or River minor version, saying which."""
    if header.get("format") != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format {header.get('format')} is not supported (this build reads "
            f"format {FORMAT_VERSION}); re-train or replay to rebuild the state"
        )
    here, there = _version("river"), str(header.get("river"))
    if _minor(here) != _minor(there):
        raise SnapshotError(
            f"snapshot was written with River {there}, this build runs River {here}; "
            "models do not transfer across River versions: re-train or replay"
        )


def decode_snapshot(raw: bytes) -> PartitionSnapshot:
    """Check versions, then unpickle; any failure is a SnapshotError with the reason."""
    header = read_header(raw)
    check_compatible(header)
    (size,) = _HEADER.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _HEADER.size + size
    try:
        snapshot = pickle.loads(raw[start:])
    except Exception as exc:  # a truncated or tampered body raises many kinds of error
        raise SnapshotError(f"corrupt snapshot body: {type(exc).__name__}: {exc}") from None
    if not isinstance(snapshot, PartitionSnapshot):
        raise SnapshotError("snapshot body is not a PartitionSnapshot")
    return snapshot


def save_snapshot(path: Path, snapshot: PartitionSnapshot) -> None:
    """Write atomically: a crash mid-write never leaves a half snapshot under the name."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_snapshot(snapshot))
    tmp.replace(path)


def load_snapshot(path: Path) -> PartitionSnapshot:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"snapshot not found: {path}") from None
    return decode_snapshot(raw)
