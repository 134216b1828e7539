"""A rebuild from the merchant feed on the real broker, both adapters: the bulk reader fetches
16 MB a partition, so it delivers the feed partition by partition and the table queued most
of it at once (the scorer stayed 307 MiB larger after a broker restart in `make soak`). The
rebuild pauses the partitions that run ahead; each client drops what it prefetched for them
and fetches it again on resume, so nothing is folded twice or missed: the rebuilt table and
shared champion are exactly an in-process fold of the same records."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.devtools.feed import folded, synthetic_feed
from stream.kafka.clients import connect
from stream.observability.metrics import Metrics
from stream.serving.merchant_feed import MerchantFeed
from stream.state.merchant_feed import decode_feed

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _rebuild(settings: Any, records: dict[int, list[bytes]], queue_max: int) -> tuple[
        Pipeline, MerchantFeed]:
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=PARTITIONS, merchant_feed=True)
    feed = MerchantFeed(settings, pipeline, connect(settings), Metrics(CollectorRegistry()),
                        PARTITIONS)
    feed.queue_max, feed.poll_records = queue_max, 50
    try:
        assert feed.rebuild(stall_s=60.0) == sum(
            len(decode_feed(r).events) for rs in records.values() for r in rs)
    finally:
        feed.close()
    return pipeline, feed


def test_a_rebuild_pauses_the_partitions_ahead_and_folds_every_record_once(
        kafka_bootstrap: str, kafka_client: str, admin: Any) -> None:
    group = f"rebuild-{uuid.uuid4().hex[:8]}"
    settings = load_settings(environ={}, bootstrap_servers=kafka_bootstrap,
                             kafka_client=kafka_client, group_id=group,
                             merchant_state="shared", model_state="shared", model_epoch_s=60.0)
    topic = settings.merchant_feed_topic
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    try:
        expected = Pipeline(pipeline_config(settings), model_version(settings),
                            merchant_partitions=PARTITIONS, merchant_feed=True)
        assert expected.timeline is not None
        records = synthetic_feed(PARTITIONS, 6_000, len(expected.timeline.names))
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        for partition, raws in records.items():
            for raw in raws:
                producer.send(topic, value=raw, partition=partition)
                record = decode_feed(raw)
                expected.apply_feed(partition, record.first_seq, record.events, record.mark,
                                    record.stream_time)
        producer.flush()
        producer.close()

        paced, feed = _rebuild(settings, records, queue_max=2_000)
        assert feed.rebuild_pauses > 0
        assert folded(paced) == folded(expected)
        _, unpaced = _rebuild(settings, records, queue_max=10**9)
        assert unpaced.rebuild_pauses == 0
        # Each partition's first poll counts before the frontier can move at all.
        assert feed.rebuild_queued_peak <= 2_000 + PARTITIONS * 50 * 90
        assert feed.rebuild_queued_peak < unpaced.rebuild_queued_peak
    finally:
        admin.delete_topics([topic])
