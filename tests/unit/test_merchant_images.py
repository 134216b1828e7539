"""Merchant table images on the topic (serving/merchant_images.py), without a broker: what a
writer sends loads back into an empty table as it was; an image that cannot be used (a chunk
missing, another state key, feed positions retention has passed, other settings) is refused,
counted, and leaves the table empty for a full fold; the next image deletes the chunks of
the ones it replaces. The real broker round trip, on both adapters, is in
tests/integration/test_durability.py (`shared-images`: a restart from an image scores bit
for bit as an uninterrupted run)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from test_shared_model import PARTITIONS, _pipeline
from test_table_image import trained

from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.records import BEGINNING, Polled, Record, Source
from stream.observability.metrics import Metrics
from stream.serving.merchant_images import MerchantImages
from stream.state.keys import StateKey

SETTINGS = load_settings(environ={}, merchant_state="shared", model_state="shared",
                         merchant_image_interval_s=60.0, max_message_bytes=100_000,
                         dead_letter_payload_bytes=4096)
TOPIC = SETTINGS.merchant_images_topic
FEED_ENDS: dict[Source, tuple[int, int]] = {("feed", p): (0, 50) for p in range(PARTITIONS)}


class TopicReader:
    """A read_committed reader of one in-memory log per partition."""

    def __init__(self, logs: Mapping[Source, list[Record]]) -> None:
        self.logs = logs
        self._at: dict[Source, int] = {}

    def watermarks(self, source: Source, timeout_s: float) -> tuple[int, int]:
        return 0, len(self.logs.get(source, []))

    def assign(self, starts: Mapping[Source, int]) -> None:
        self._at = {s: 0 if o == BEGINNING else o for s, o in starts.items()}

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        out: list[Record] = []
        for source, at in self._at.items():
            taken = self.logs.get(source, [])[at:at + max_records]
            out += taken
            self._at[source] = at + len(taken)
        ends = [s for s, at in self._at.items() if at >= len(self.logs.get(s, []))]
        return Polled(out, ends)


class Topic:
    """What a writer sends, as the log a reader reads."""

    def __init__(self) -> None:
        self.log: list[Record] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int = 0,
             headers: object = ()) -> None:
        assert topic == TOPIC and partition == 0
        self.log.append(Record(topic, 0, len(self.log), key, value))

    def reader(self) -> TopicReader:
        return TopicReader({(TOPIC, 0): self.log})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _images(pipe: Pipeline, clock: Clock | None = None) -> tuple[MerchantImages, Metrics]:
    metrics = Metrics(CollectorRegistry())
    images = MerchantImages(SETTINGS, pipe, metrics, clock or Clock())
    # Chunks of 20 kB: these tables' images (about 50 kB; fewer state copies are kept since
    # the table releases them every 100 events) then come as several chunks and a manifest.
    images.limit = 20_000
    return images, metrics


def _count(metrics: Metrics, event: str) -> float:
    return metrics.registry.get_sample_value("fraudstream_merchant_images_total",
                                             {"event": event}) or 0.0


def test_an_image_is_due_every_interval_on_the_owner_of_partition_0_only() -> None:
    clock = Clock()
    owner, _ = _images(trained(400), clock)
    assert not owner.due()
    clock.now = 60.0
    assert owner.due()
    owner.write(Topic().send, (), {})
    assert not owner.due()
    clock.now = 120.0
    assert owner.due()
    other = _pipeline(2)
    other.assign(2)
    assert not _images(other, clock)[0].due()


def test_a_written_image_loads_back_as_the_table_it_was_taken_from() -> None:
    source, topic = trained(400), Topic()
    writer, written = _images(source)
    sent = writer.write(topic.send, (), {0: 10, 1: 11, 2: 12, 3: 13})
    assert sent == len(topic.log) > 2  # chunks (20 kB, `_images`) and the manifest
    assert _count(written, "written") == 1
    target = _pipeline(2)
    loader, metrics = _images(target)
    assert loader.load(topic.reader(), FEED_ENDS, 1.0) == {0: 10, 1: 11, 2: 12, 3: 13}
    assert _count(metrics, "loaded") == 1
    assert source.merchants is not None and target.merchants is not None
    ours, theirs = target.merchants.image(), source.merchants.image()
    ours.timeline = theirs.timeline = None  # models compare by identity
    assert ours == theirs and len(ours.merchants) > 10


def _refused(topic: Topic, target: Pipeline | None = None,
             ends: dict[Source, tuple[int, int]] = FEED_ENDS) -> Pipeline:
    target = target or _pipeline(2)
    loader, metrics = _images(target)
    assert loader.load(topic.reader(), ends, 1.0) is None
    assert _count(metrics, "refused") == 1 and _count(metrics, "loaded") == 0
    assert target.merchants is not None and len(target.merchants) == 0
    return target


def test_an_image_with_a_chunk_missing_is_refused() -> None:
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {})
    del topic.log[1]
    _refused(topic)


def test_an_image_signed_with_another_key_is_refused() -> None:
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {})
    other_key = StateKey.from_text("o" * 32, "test")
    target = Pipeline(replace(_pipeline(2).config, state_key=other_key),
                      merchant_partitions=PARTITIONS, merchant_feed=True)
    _refused(topic, target)


def test_an_image_whose_feed_positions_retention_has_passed_is_refused() -> None:
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {0: 3, 1: 3, 2: 3, 3: 3})
    ends = dict(FEED_ENDS)
    ends[("feed", 1)] = (5, 50)  # the records after the image's offset 3 are gone
    _refused(topic, ends=ends)


def test_an_image_of_other_settings_is_refused() -> None:
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {})
    _refused(topic, _pipeline(2, merchant_ttl_s=86400.0))


def test_an_image_taken_under_another_merchant_delta_is_loaded() -> None:
    """The fold does not depend on `merchant_delta_s` (table_image tests the reads): after
    a change of it, a rebuild loads the image rather than fold the whole feed again."""
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {0: 10, 1: 11, 2: 12, 3: 13})
    target = _pipeline(2, merchant_delta_s=600.0)
    loader, metrics = _images(target)
    assert loader.load(topic.reader(), FEED_ENDS, 1.0) == {0: 10, 1: 11, 2: 12, 3: 13}
    assert _count(metrics, "loaded") == 1 and _count(metrics, "refused") == 0
    assert target.merchants is not None and len(target.merchants) > 0


@pytest.mark.parametrize("manifest", [b"{", b"[]", b'{"id": "x"}'])
def test_a_malformed_manifest_is_skipped_for_the_last_good_one(manifest: bytes) -> None:
    topic = Topic()
    _images(trained(400))[0].write(topic.send, (), {})
    topic.send(TOPIC, b"manifest", manifest)
    loader, metrics = _images(_pipeline(2))
    assert loader.load(topic.reader(), FEED_ENDS, 1.0) == {}
    assert _count(metrics, "loaded") == 1


def test_the_next_image_deletes_the_chunks_of_the_images_it_replaces() -> None:
    topic, clock = Topic(), Clock()
    pipe = trained(400)
    first, _ = _images(pipe, clock)
    first.write(topic.send, (), {})
    old_chunks = {r.key for r in topic.log if r.key != b"manifest"}
    # A new writer (another process) learns of them from the topic when it loads.
    second, _ = _images(_pipeline(0), clock)
    assert second.load(topic.reader(), FEED_ENDS, 1.0) == {}
    second.pipeline.assign(0)
    start = len(topic.log)
    second.write(topic.send, (), {})
    tombstones = {r.key for r in topic.log[start:] if r.value is None}
    assert tombstones == old_chunks
