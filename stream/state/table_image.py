"""Signed bytes of a merchant table image (features/merchant_table.py `TableImage`): the shared
merchant table and champion at one point of the fold, for a rebuild that loads it instead of
folding the whole merchant feed.

Why a format of its own: an image holds the shared champion (a River model, pickled, as the
partition snapshots hold theirs), so it is authenticated before anything is unpickled, with
the partition snapshot's framing and key (state/snapshot.py: magic bytes, a JSON header, an
HMAC-SHA256 tag, the body) under its own magic bytes, so that neither is ever taken for the
other. After unpickling, its shape is checked (`_check`): a signed image from a broken build
must be refused with a reason, never crash the loop that folds it later.

>>> from stream.core.features.merchant_table import MerchantTable
>>> from stream.state.keys import StateKey
>>> key = StateKey.from_text("k" * 32, "doctest")
>>> table = MerchantTable(partitions=2)
>>> table.add(0, 1, 100.0, "m1", 0, 0.0); table.watermark(0, 150.0); table.watermark(1, 150.0)
>>> raw = encode_table_image(table.image(), key)
>>> [m for m, _ in decode_table_image(raw, key).merchants]
['m1']
>>> decode_table_image(raw[:-1] + bytes([raw[-1] ^ 1]), key)  # doctest: +ELLIPSIS
Traceback (most recent call last):
stream.state.snapshot.StateAuthenticationError: merchant table image failed authentication: ...
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from stream.core.features.merchant_table import MerchantRows, TableImage
from stream.core.scoring.timeline import TimelineImage
from stream.state.keys import StateKey
from stream.state.snapshot import SnapshotError, decode_signed, encode_signed

__all__ = ["MAGIC", "MANIFEST_KEY", "Manifest", "chunk_of", "decode_manifest",
           "decode_table_image", "encode_table_image", "image_records", "join_chunks"]

MAGIC = b"FTIMG"
MANIFEST_KEY = b"manifest"
_CHUNK_KEY = re.compile(rb"c:([0-9a-f]{16}):(0|[1-9][0-9]{0,8})")
_ID = re.compile(r"[0-9a-f]{16}")


def encode_table_image(image: TableImage, key: StateKey) -> bytes:
    """MAGIC, the header's length, a JSON header (versions, the fold's frontier and size),
    the tag, the pickled image."""
    return encode_signed(MAGIC, {
        "partitions": image.partitions,
        "frontier": image.frontier if math.isfinite(image.frontier) else None,
        "merchants": len(image.merchants),
        "folded": image.folded,
    }, image, key)


def decode_table_image(raw: bytes, key: StateKey | None,
                       where: str = "merchant table image") -> TableImage:
    """Authenticate, check versions, unpickle, check the shape; any failure is a
    SnapshotError that says why, prefixed by `where`."""
    image = decode_signed(raw, key, where, MAGIC)
    problem = _check(image)
    if problem:
        raise SnapshotError(f"{where} is malformed: {problem}")
    assert isinstance(image, TableImage)
    return image


def _floats(values: Any) -> bool:
    return isinstance(values, list) and all(type(v) is float for v in values)


def _check(image: Any) -> str:
    """What is wrong with an unpickled image's shape ("" when nothing is): the types the
    table's fold and reads rely on. Widths and parameters are the table's to check
    (`MerchantTable.load` raises ImageMismatch)."""
    if not isinstance(image, TableImage):
        return f"not a TableImage but {type(image).__name__}"
    if type(image.partitions) is not int or image.partitions < 1:
        return f"partitions {image.partitions!r}"
    scalars = (image.frontier, image.horizon, image.lateness_s)
    if not all(type(v) is float for v in scalars) or type(image.folded) is not int:
        return "a frontier, horizon, lateness or count that is not a number"
    if not _floats(image.marks) or not isinstance(image.params, dict):
        return "watermarks or parameters of the wrong type"
    if not _merchants(image.merchants):
        return "merchant rows that are not names and numbers"
    if not isinstance(image.copies, list) or not all(_copies(row) for row in image.copies):
        return "a state copy that is not (name, times, rows) or (name, [(time, numbers)])"
    if not isinstance(image.queued, list) or not all(_queued(e) for e in image.queued):
        return "a queued event that is not (time, partition, seq, kind, merchant, value)"
    if not isinstance(image.views, dict) or not all(
            type(p) is int and isinstance(v, tuple) and len(v) == 2 and type(v[0]) is int
            and type(v[1]) is float for p, v in image.views.items()):
        return "a partition position that is not (seq, stream time)"
    timeline = image.timeline
    if timeline is not None and not (
            isinstance(timeline, TimelineImage) and type(timeline.learned) is int
            and _floats(timeline.starts) and isinstance(timeline.copies, list)
            and len(timeline.copies) == len(timeline.starts)):
        return "a shared champion that is not a TimelineImage with one copy per epoch"
    return ""


def _merchants(merchants: Any) -> bool:
    """``MerchantRows`` (names, and their rows in one ``array('d')``), or as images before
    2026-12-04 listed them: ``[(name, [floats]), ...]``."""
    if isinstance(merchants, MerchantRows):
        names, rows = getattr(merchants, "names", None), getattr(merchants, "rows", None)
        return (type(names) is list and all(type(n) is str for n in names)
                and type(rows) is array and rows.typecode == "d")
    return isinstance(merchants, list) and all(
        isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str)
        and _floats(row[1]) for row in merchants)


def _copies(row: Any) -> bool:
    """One merchant's state copies: ``(name, times, rows)``, two ``array('d')`` (whose
    elements are floats by construction), or as images before 2026-12-04 listed them."""
    if not (isinstance(row, tuple) and isinstance(row[0] if row else None, str)):
        return False
    if len(row) == 3:
        return all(type(a) is array and a.typecode == "d" for a in row[1:])
    return len(row) == 2 and isinstance(row[1], list) and all(
        isinstance(c, tuple) and len(c) == 2 and type(c[0]) is float and _floats(c[1])
        for c in row[1])


def _queued(event: Any) -> bool:
    if not (isinstance(event, tuple) and len(event) == 6):
        return False
    eff, partition, seq, kind, merchant, value = event
    return (type(eff) is float and type(partition) is int and type(seq) is int
            and kind in (0, 1, 2) and isinstance(merchant, str)
            and (type(value) is float or (isinstance(value, tuple)
                                          and all(type(v) is float for v in value))))


# -- on the merchant-images topic: chunks, then a manifest ----------------------------------
@dataclass(frozen=True, slots=True)
class Manifest:
    """The latest image on the topic (topics/transactions.merchant-images.schema.json)."""

    id: str
    chunks: int
    size: int
    sha256: str
    positions: dict[int, int]
    frontier: float | None = None
    merchants: int = 0

    def chunk_keys(self) -> list[bytes]:
        return [b"c:%s:%d" % (self.id.encode(), n) for n in range(self.chunks)]


def image_records(raw: bytes, positions: Mapping[int, int], image: TableImage,
                  limit: int) -> tuple[Manifest, list[tuple[bytes, bytes]]]:
    """A signed image as records of at most `limit` bytes of value: its chunks, then the
    manifest that names them (written last: a reader never meets a manifest before its
    chunks). The id is random per image, so two writers never overwrite each other's chunks.

    >>> from stream.core.features.merchant_table import MerchantTable
    >>> manifest, records = image_records(b"x" * 25, {0: 7}, MerchantTable(1).image(), 10)
    >>> [len(v) for _, v in records[:-1]], records[-1][0], manifest.chunks
    ([10, 10, 5], b'manifest', 3)
    >>> decode_manifest(records[-1][1]) == manifest
    True
    """
    image_id = secrets.token_hex(8)
    pieces = [raw[i:i + limit] for i in range(0, len(raw), limit)] or [b""]
    manifest = Manifest(image_id, len(pieces), len(raw), hashlib.sha256(raw).hexdigest(),
                        dict(positions),
                        image.frontier if math.isfinite(image.frontier) else None,
                        len(image.merchants))
    records = list(zip(manifest.chunk_keys(), pieces, strict=True))
    value = orjson.dumps({
        "id": manifest.id, "chunks": manifest.chunks, "bytes": manifest.size,
        "sha256": manifest.sha256,
        "positions": {str(p): o for p, o in sorted(manifest.positions.items())},
        "frontier": manifest.frontier, "merchants": manifest.merchants})
    return manifest, [*records, (MANIFEST_KEY, value)]


def decode_manifest(value: bytes) -> Manifest:
    """A manifest record's value, checked field by field (untrusted: anyone able to write the
    topic can put anything there); SnapshotError says what is wrong."""
    try:
        raw: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"merchant image manifest is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SnapshotError("merchant image manifest is not a JSON object")
    image_id, chunks, size, digest = (raw.get(k) for k in ("id", "chunks", "bytes", "sha256"))
    positions = raw.get("positions")
    if not (isinstance(image_id, str) and _ID.fullmatch(image_id)):
        raise SnapshotError("merchant image manifest: `id` is not 16 hex digits")
    for name, number in (("chunks", chunks), ("bytes", size)):
        if type(number) is not int or number < 1:
            raise SnapshotError(f"merchant image manifest: `{name}` is not a positive integer")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise SnapshotError("merchant image manifest: `sha256` is not 64 hex digits")
    if not isinstance(positions, dict) or not all(
            isinstance(p, str) and p.isdigit() and type(o) is int and o >= 0
            for p, o in positions.items()):
        raise SnapshotError("merchant image manifest: `positions` is not partition -> offset")
    frontier = raw.get("frontier")
    merchants = raw.get("merchants", 0)
    assert isinstance(chunks, int) and isinstance(size, int)
    return Manifest(image_id, chunks, size, digest, {int(p): o for p, o in positions.items()},
                    float(frontier) if isinstance(frontier, int | float) else None,
                    merchants if type(merchants) is int else 0)


def chunk_of(key: bytes | None) -> str | None:
    """The image id a record key names as one of its chunks (None: not a chunk key)."""
    match = _CHUNK_KEY.fullmatch(key or b"")
    return match.group(1).decode() if match else None


def join_chunks(manifest: Manifest, chunks: Mapping[bytes, bytes]) -> bytes:
    """The manifest's image from the chunks read; SnapshotError when one is missing or the
    joined bytes are not the ones the manifest names."""
    parts = []
    for key in manifest.chunk_keys():
        part = chunks.get(key)
        if part is None:
            raise SnapshotError(f"merchant image {manifest.id}: chunk {key.decode()} is missing")
        parts.append(part)
    raw = b"".join(parts)
    if len(raw) != manifest.size or hashlib.sha256(raw).hexdigest() != manifest.sha256:
        raise SnapshotError(f"merchant image {manifest.id}: its chunks do not add up to the "
                            "image its manifest names (size or SHA-256)")
    return raw
