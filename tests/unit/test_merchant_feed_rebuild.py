"""A rebuild from the merchant feed keeps its queue bounded, without a broker: a reader that
delivers the feed partition by partition (as a bulk fetch of 16 MB per partition does) made
the table queue most of the feed at once, and the scorer stayed hundreds of MiB larger after
a broker restart (`make soak`). The partitions ahead are paused now; the fold is the same."""

from __future__ import annotations

from keys_support import KEY
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.devtools.feed import folded, synthetic_feed
from stream.kafka.records import BEGINNING, Polled, Record, Source
from stream.observability.metrics import Metrics
from stream.serving.merchant_feed import MerchantFeed
from stream.state.keys import StateKey

PARTITIONS = 4
TOPIC = "app.merchant-feed"


class BlockedReader:
    """The feed, delivered partition by partition: `chunk` records at a time from the first
    partition that is neither paused nor finished. A pause drops nothing it has to give back
    (it hands out records only as they are polled), like a client that refetches on resume."""

    def __init__(self, records: dict[int, list[bytes]], chunk: int = 20) -> None:
        self.records = records
        self.chunk = chunk
        self.positions: dict[int, int] = {}
        self.paused: set[Source] = set()
        self.pauses = 0

    def watermarks(self, source: Source, timeout_s: float) -> tuple[int, int]:
        return 0, len(self.records[source[1]])

    def assign(self, starts: dict[Source, int]) -> None:
        self.positions = {s[1]: 0 if o == BEGINNING else o for s, o in starts.items()}

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        for p, at in sorted(self.positions.items()):
            if (TOPIC, p) in self.paused or at >= len(self.records[p]):
                continue
            end = min(at + min(self.chunk, max_records), len(self.records[p]))
            self.positions[p] = end
            return Polled([Record(TOPIC, p, o, None, self.records[p][o], 0, ())
                           for o in range(at, end)], [])
        return Polled([], [(TOPIC, p) for p, at in self.positions.items()
                           if at >= len(self.records[p])])

    def pause(self, sources: list[Source]) -> None:
        assert not self.paused & set(sources), "paused twice"
        self.paused.update(sources)
        self.pauses += 1

    def resume(self, sources: list[Source]) -> None:
        assert set(sources) <= self.paused, "resumed what was not paused"
        self.paused.difference_update(sources)


class _Clients:
    def __init__(self, reader: BlockedReader) -> None:
        self._reader = reader

    def reader(self, bulk: bool = False) -> BlockedReader:
        return self._reader


def _rebuilt(queue_max: int, key: StateKey | None = None
             ) -> tuple[Pipeline, MerchantFeed, BlockedReader]:
    """`key`: the state key images are signed with (without one there are no images)."""
    settings = load_settings(environ={}, group_id="app", merchant_state="shared",
                             model_state="shared", model_epoch_s=60.0)
    pipeline = Pipeline(pipeline_config(settings, key), model_version(settings),
                        merchant_partitions=PARTITIONS, merchant_feed=True)
    assert pipeline.timeline is not None
    reader = BlockedReader(synthetic_feed(PARTITIONS, 8_000, len(pipeline.timeline.names)))
    feed = MerchantFeed(settings, pipeline, _Clients(reader),  # type: ignore[arg-type]
                        Metrics(CollectorRegistry()), PARTITIONS)
    feed.queue_max = queue_max
    feed.rebuild(stall_s=5.0)
    return pipeline, feed, reader


def test_a_rebuild_pauses_the_partitions_ahead_and_folds_the_same() -> None:
    paced, feed, reader = _rebuilt(queue_max=2_000)
    unpaced, unbounded, free = _rebuilt(queue_max=10**9)
    assert free.pauses == 0
    # Partition by partition, the table queued three partitions' events (about 40,000)
    # before the last partition's watermarks let it fold any of them.
    assert unbounded.rebuild_queued_peak > 30_000
    assert reader.pauses > 0 and not reader.paused
    # Every partition has to bring something before the frontier moves at all, so the
    # table can queue one poll from each beyond the limit: a poll is sized to the records'
    # events (about 90 here) so that those come to half the limit at most. Polls of 20
    # records each, whatever their size, reached 6,769.
    assert feed.rebuild_queued_peak <= 2_000 * 3 // 2 + PARTITIONS * 90
    assert folded(paced) == folded(unpaced)
    assert paced.timeline is not None and paced.timeline.learned > 10_000


def test_a_finished_partition_that_holds_the_frontier_pauses_nothing() -> None:
    """Partition 0's feed ends early (a partition whose traffic stopped): the frontier stays at
    its last watermark and the others' events wait whatever is paused, so the rebuild reads on
    rather than stall."""
    settings = load_settings(environ={}, group_id="app", merchant_state="shared")
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=PARTITIONS, merchant_feed=True)
    records = synthetic_feed(PARTITIONS, 8_000, 1)
    records[0] = records[0][:3]
    reader = BlockedReader(records)
    feed = MerchantFeed(settings, pipeline, _Clients(reader),  # type: ignore[arg-type]
                        Metrics(CollectorRegistry()), PARTITIONS)
    feed.queue_max = 500
    feed.rebuild(stall_s=5.0)
    assert not reader.paused
    assert all(at == len(records[p]) for p, at in reader.positions.items())


def test_a_rebuild_that_folded_feed_events_makes_an_image_due_at_once() -> None:
    """The next checkpoint writes an image after a rebuild that had to fold (serving/
    merchant_images.py `MerchantImages.rebuilt`): an image lost with an aborted checkpoint
    was not written again for the whole interval, so a crash in it folded the whole feed."""
    pipeline, feed, _ = _rebuilt(queue_max=10**9, key=KEY)
    assert feed.images is not None
    pipeline.assign(0)  # images are written by the owner of input partition 0
    assert feed.images.due()
