"""Images of the shared merchant table on Kafka: written in checkpoints, loaded by rebuilds.

Why: a rebuild (start, a rebalance that brings partitions, a rewind) otherwise folds the
whole merchant feed, up to 90 days of every partition's merchant events, and with the shared
champion relearns every label in it: about 16 CPU hours at 100 labels a second. That cost on
every start kept the shared table opt-in. An image (features/merchant_table.py `TableImage`)
is the table and champion at one checkpoint, with where in the feed it stands; a rebuild
loads the latest and folds only the feed records after it, with the same result.

- Written every `merchant_image_interval_s`, and at the first checkpoint after a rebuild
  that had to fold feed events (`MerchantImages.rebuilt`), by the instance that owns input
  partition 0 (one writer; any instance's image would do, every instance holds the whole
  table), inside a checkpoint right after its feed records, so under exactly-once in the
  same transaction: the image never holds an owned partition's events its changelog does
  not. Signed with the state key (state/table_image.py), as chunks then a manifest, to
  `<application_id>.merchant-images` (compacted); the next image deletes the previous one's
  chunks.
- Read by a rebuild from the whole topic (read_committed): the last manifest, its chunks,
  the SHA-256 the manifest names, authentication, then the image's settings
  (`Pipeline.load_merchants`). An image that fails any of these, or whose feed positions are
  no longer in the feed (retention deleted what came after it), is refused, counted and
  logged; the rebuild then folds the whole feed, as without images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from stream.config import Settings
from stream.core.features.merchant_table import ImageMismatch
from stream.core.pipeline import Pipeline
from stream.kafka.classify import ClientError
from stream.kafka.clients import Reader
from stream.kafka.records import BEGINNING, Source
from stream.kafka.restore import batches_to_end
from stream.observability.metrics import Metrics
from stream.serving.handlers import RECORD_OVERHEAD
from stream.state.snapshot import SnapshotError
from stream.state.table_image import (
    MANIFEST_KEY,
    Manifest,
    chunk_of,
    decode_manifest,
    decode_table_image,
    encode_table_image,
    image_records,
    join_chunks,
)

log = logging.getLogger("stream.serving.merchant_images")

Send = Callable[..., None]


class MerchantImages:
    """Write the shared table's image when one is due; load the latest into a rebuild."""

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = settings.merchant_images_topic
        self.interval_s = settings.merchant_image_interval_s
        self.limit = settings.max_message_bytes - RECORD_OVERHEAD - 64  # the chunk key
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self._due_at = clock() + self.interval_s
        # Chunk keys on the topic that the next image replaces (the latest image's, and any
        # an interrupted write left): deleted with it.
        self._stale: set[bytes] = set()

    # -- writing (inside a checkpoint, after the feed records) -------------------------------
    def due(self) -> bool:
        return (self.interval_s > 0 and 0 in self.pipeline.partitions
                and self.clock() >= self._due_at)

    def write(self, send: Send, headers: tuple[tuple[str, bytes], ...],
              positions: dict[int, int]) -> int:
        """The image, as chunks and a manifest, then tombstones for the chunks it replaces;
        returns the records sent. `positions`: per feed partition, the offset after the
        last record the table holds."""
        key = self.pipeline.config.state_key
        assert key is not None
        started = time.perf_counter()
        image = self.pipeline.export_merchants()
        raw = encode_table_image(image, key)
        manifest, records = image_records(raw, positions, image, self.limit)
        for record_key, value in records:
            send(self.topic, record_key, value, partition=0, headers=headers)
        for record_key in sorted(self._stale):
            send(self.topic, record_key, None, partition=0, headers=headers)
        sent = len(records) + len(self._stale)
        self._stale = set(manifest.chunk_keys())
        self._due_at = self.clock() + self.interval_s
        self.metrics.merchant_images.labels("written").inc()
        log.info("merchant table image %s written: %d merchants, %d bytes in %d chunks, "
                 "%.2fs", manifest.id, len(image.merchants), len(raw), manifest.chunks,
                 time.perf_counter() - started)
        return sent

    def rebuilt(self, folded: int) -> None:
        """A rebuild folded `folded` feed events past the latest image: the next checkpoint
        writes an image, so that the next rebuild does not fold them again.

        Why: the interval counts from the last image this process wrote, and an image can
        be lost with the checkpoint it was in (exactly-once aborts a failed one). In a
        30-minute `make soak` (2026-12-05) the image written right after a broker restart
        went with the transaction that failed 35 s later; the next was not due for ten
        minutes, and the scorer started after a SIGKILL 9.5 minutes later folded the whole
        feed, 1,437,144 events in 34 s, where an image written after the rewind's rebuild
        would have left it the 8.5 minutes since. A start that folded the whole feed is the
        same case.

        >>> images = MerchantImages.__new__(MerchantImages)
        >>> images.clock, images._due_at = (lambda: 5.0), 600.0
        >>> images.rebuilt(0); images._due_at
        600.0
        >>> images.rebuilt(12); images._due_at
        5.0
        """
        if folded > 0:
            self._due_at = min(self._due_at, self.clock())

    # -- reading (a rebuild) ------------------------------------------------------------------
    def load(self, reader: Reader, feed_ends: dict[Source, tuple[int, int]],
             stall_s: float) -> dict[int, int] | None:
        """Load the latest usable image into the (empty) table; returns where in each feed
        partition the rebuild reads on from, or None (no image, or one refused: the rebuild
        folds the whole feed)."""
        manifest, chunks = self._read(reader, stall_s)
        if manifest is None:
            return None
        try:
            positions = self._positions(manifest, feed_ends)
            image = decode_table_image(join_chunks(manifest, chunks),
                                       self.pipeline.config.state_key,
                                       f"merchant table image {manifest.id}")
            self.pipeline.load_merchants(image)
        except (SnapshotError, ImageMismatch) as exc:
            self.pipeline.reset_merchants()
            self.metrics.merchant_images.labels("refused").inc()
            log.warning("%s: not using the merchant table image, folding the whole merchant "
                        "feed instead: %s", self.topic, exc)
            return None
        self.metrics.merchant_images.labels("loaded").inc()
        log.info("merchant table image %s loaded: %d merchants", manifest.id,
                 len(self.pipeline.merchants or ()))
        return positions

    def _read(self, reader: Reader, stall_s: float) -> tuple[Manifest | None,
                                                               dict[bytes, bytes]]:
        """The last valid manifest and every live chunk, read to the topic's end."""
        source = (self.topic, 0)
        try:
            low, high = reader.watermarks(source, stall_s)
        except ClientError as exc:
            log.warning("%s not readable (%s): folding the whole merchant feed", self.topic, exc)
            return None, {}
        manifest: Manifest | None = None
        chunks: dict[bytes, bytes] = {}
        if high <= low:
            return None, chunks
        reader.assign({source: BEGINNING})
        for records in batches_to_end(reader, source, high, stall_s=stall_s,
                                      what=f"{self.topic} read"):
            for record in records:
                if record.key == MANIFEST_KEY and record.value is not None:
                    try:
                        manifest = decode_manifest(record.value)
                    except SnapshotError as exc:
                        log.warning("%s offset %d: skipping a malformed manifest: %s",
                                    self.topic, record.offset, exc)
                elif chunk_of(record.key) is not None and record.key is not None:
                    if record.value is None:
                        chunks.pop(record.key, None)
                    else:
                        chunks[record.key] = record.value
        # Every chunk alive goes with the next image: it replaces the manifest's too.
        self._stale = set(chunks)
        return manifest, chunks

    def _positions(self, manifest: Manifest, feed_ends: dict[Source, tuple[int, int]]
                   ) -> dict[int, int]:
        """The manifest's feed positions, checked against the feed as it is now."""
        positions: dict[int, int] = {}
        for (_, partition), (low, high) in feed_ends.items():
            at = manifest.positions.get(partition)
            if at is None:
                if low > 0:
                    raise SnapshotError(f"it does not say where feed partition {partition} "
                                        "stands, and that partition no longer starts at 0")
                continue
            if not low <= at <= high:
                raise SnapshotError(
                    f"it goes on from offset {at} of feed partition {partition}, which holds "
                    f"{low} to {high} now (retention deleted what came after the image, or "
                    "the feed was recreated)")
            positions[partition] = at
        if any(p not in {q for _, q in feed_ends} for p in manifest.positions):
            raise SnapshotError("it names a feed partition the merchant feed does not have")
        return positions


def feed_starts(ends: dict[Source, tuple[int, int]],
                positions: dict[int, int] | None) -> dict[Source, int]:
    """Where a rebuild reads each feed partition from: an image's positions, else the start
    (`records.BEGINNING`).

    >>> feed_starts({("f", 0): (0, 9), ("f", 1): (4, 4)}, {0: 7}) == {
    ...     ("f", 0): 7, ("f", 1): BEGINNING}
    True
    """
    positions = positions or {}
    return {source: positions.get(source[1], BEGINNING) for source in ends}
