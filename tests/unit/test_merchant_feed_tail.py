"""The merchant feed's tail, without a broker: an instance folds the other instances'
records and skips its own partitions' (folded when they were made) without decoding them."""

from __future__ import annotations

from typing import Any

from keys_support import KEY
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.records import Polled, Record
from stream.observability.metrics import Metrics
from stream.serving.merchant_feed import MerchantFeed
from stream.state.merchant_feed import decode_feed, encode_feed

TOPIC = "app.merchant-feed"


class _Tail:
    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        records, self.records = self.records, []
        return Polled(records, [])


def test_the_tail_folds_other_partitions_and_skips_its_own_undecoded() -> None:
    settings = load_settings(environ={}, group_id="app", merchant_state="shared")
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                        merchant_partitions=2, merchant_feed=True)
    pipeline.assign(0)
    feed = MerchantFeed(settings, pipeline, None, Metrics(CollectorRegistry()), 2)  # type: ignore[arg-type]
    other = encode_feed(1, [(100.0, 0, "m1", 0.0), (101.0, 0, "m2", 0.0)], 70.0, 101.0)
    own = b"not JSON: would be rejected and counted if it were decoded"
    tail: Any = _Tail([Record(TOPIC, 1, 0, None, other, 0, ()),
                       Record(TOPIC, 0, 0, None, own, 0, ())])
    feed._tail = tail
    assert feed.poll(0.1) == 2
    assert feed.metrics.merchant_feed_rejected._value.get() == 0
    assert pipeline.merchants is not None and pipeline.merchants.mark_of(1) == 70.0


def test_a_checkpoint_with_thousands_of_examples_is_published_in_records_that_fit() -> None:
    """With the shared champion a checkpoint of 3,000 labels carries ~1.9 MB of examples: one
    record was refused by the broker (over max_message_bytes) and the scorer fell back to
    checkpointing one input at a time. Every record fits now, and a reader folding them one
    by one sees every example and the watermark only with the last."""
    settings = load_settings(environ={}, group_id="app", merchant_state="shared",
                             model_state="shared")
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                        merchant_partitions=2, merchant_feed=True)
    state = pipeline.assign(0)
    view = state.merchants
    assert view is not None
    names = pipeline.timeline.names if pipeline.timeline is not None else ()
    for i in range(3000):
        view.learn([float(i % 97) * 1.234567 for _ in names], i % 50 == 0,  # type: ignore[union-attr]
                   1.7e9 + i)
    sent: list[bytes] = []
    feed = MerchantFeed(settings, pipeline, None, Metrics(CollectorRegistry()), 2)  # type: ignore[arg-type]
    feed.publish(lambda topic, key, value, **_: sent.append(value), ())
    assert len(sent) > 1
    assert max(len(r) for r in sent) <= settings.max_message_bytes - 1024
    reader = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                      merchant_partitions=2, merchant_feed=True)
    reader.assign(1)
    marks = []
    for raw in sent:
        record = decode_feed(raw)
        reader.apply_feed(0, record.first_seq, record.events, record.mark, record.stream_time)
        assert reader.merchants is not None
        marks.append(reader.merchants.mark_of(0))
    assert reader._views[0].seq == 3000
    assert marks[:-1] == [float("-inf")] * (len(sent) - 1) and marks[-1] > 1.7e9
