"""Measure what issue 12 asks to report: the time and memory to restore (rebuild) the shared
merchant table of 1,000,000 merchants on the real broker, from the whole merchant feed and
from a table image.

    python -m benchmarks.measure_merchants --merchants 1000000 [--examples N]
        [--bootstrap HOST:PORT]

Each merchant gets one transaction and one label, spread over 4 feed partitions in records of
1,000 events, as checkpoints write them; with --examples, the first N merchants' labels also
carry a labelled example for the shared champion (model_state "shared"), which a rebuild
from the feed learns again. A scorer's `MerchantFeed.rebuild` reads the feed back and folds
it; then it writes an image of the table (`MerchantImages.write`, as the owner of partition 0
does in a checkpoint), and a second scorer rebuilds from that image. Without --bootstrap a
local broker is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import uuid
from array import array
from typing import cast

from prometheus_client import CollectorRegistry

from stream.assembly import pipeline_config, state_key
from stream.config import load_settings
from stream.core.features.extractor import FeatureExtractor
from stream.core.features.merchant_table import LABEL, LEARN, TX, FeedEvent
from stream.core.pipeline import Pipeline
from stream.devtools.broker import given_or_local
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting
from stream.observability.metrics import Metrics
from stream.serving.merchant_feed import MerchantFeed
from stream.serving.wiring import ensure_merchant_feed
from stream.state.merchant_feed import encode_feed

PARTITIONS = 4
PER_RECORD = 1000


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def produce_feed(bootstrap: str, topic: str, merchants: int, examples: int = 0) -> int:
    """One transaction and one label per merchant, partition by partition, and a labelled
    example with the first `examples` labels; returns events."""
    width = len(FeatureExtractor().feature_names)
    settings = load_settings(environ={}, bootstrap_servers=bootstrap)
    clients = connect(settings)
    admin = clients.admin()
    admin.create_topics({topic: (PARTITIONS, 1, {})})
    admin.close()
    producer = clients.producer(linger_ms=20.0)
    events = 0
    for partition in range(PARTITIONS):
        seq, batch = 1, cast(list[FeedEvent], [])
        for i in range(partition, merchants, PARTITIONS):
            t = 1_767_225_600.0 + i * 0.01
            fraud = 1.0 if i % 97 == 0 else 0.0
            batch += [(t, TX, f"m{i:07d}", 0.0), (t + 1.0, LABEL, f"m{i:07d}", fraud)]
            if i < examples:
                batch.append((t + 1.0, LEARN, "",
                              array("d", [fraud, *(((i * 7 + j) % 13) / 13.0
                                                   for j in range(width))])))
            if len(batch) >= PER_RECORD:
                send_waiting(producer, topic, None, encode_feed(seq, batch, t - 30.0, t),
                             partition=partition)
                seq += len(batch)
                events += len(batch)
                batch = []
        if batch:
            send_waiting(producer, topic, None, encode_feed(seq, batch, 1e12, 1e12),
                         partition=partition)
            events += len(batch)
    producer.flush(60.0)
    producer.close(10.0)
    return events


def scorer(bootstrap: str, application: str, shared_model: bool) -> tuple[Pipeline, MerchantFeed]:
    settings = load_settings(environ={}, bootstrap_servers=bootstrap, group_id=application,
                             merchant_state="shared",
                             model_state="shared" if shared_model else "partition")
    pipeline = Pipeline(pipeline_config(settings, state_key(settings)),
                        merchant_partitions=PARTITIONS, merchant_feed=True)
    clients = connect(settings)
    ensure_merchant_feed(clients, settings, {settings.input_topic: PARTITIONS,
                                             settings.merchant_feed_topic: PARTITIONS})
    return pipeline, MerchantFeed(settings, pipeline, clients, Metrics(CollectorRegistry()),
                                  PARTITIONS)


def rebuild(pipeline: Pipeline, feed: MerchantFeed, how: str) -> None:
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    folded = feed.rebuild()
    elapsed = time.perf_counter() - started
    table = pipeline.merchants
    assert table is not None
    learned = f", {pipeline.timeline.learned:,} examples learned" if pipeline.timeline else ""
    print(f"{how}: {folded:,} feed events folded, {len(table):,} merchants in {elapsed:.1f} s; "
          f"resident memory {before:.0f} -> {rss_mib():.0f} MiB; {table.waiting:,} events "
          f"wait behind the frontier{learned}")


def write_image(pipeline: Pipeline, feed: MerchantFeed) -> None:
    """As the owner of partition 0 does in a checkpoint (every partition assigned here)."""
    images = feed.images
    assert images is not None
    producer = feed.clients.producer(linger_ms=20.0)
    for partition in range(PARTITIONS):
        pipeline.assign(partition)
        pipeline.drain_feed(partition)  # nothing new: the watermarks it holds are the feed's

    size = 0

    def send(topic: str, key: bytes | None, value: bytes | None, partition: int = 0,
             headers: object = None) -> None:
        nonlocal size
        size += len(value or b"")
        send_waiting(producer, topic, key, value, partition)

    started = time.perf_counter()
    sent = images.write(send, (), dict(feed.positions))
    producer.flush(120.0)
    producer.close(10.0)
    print(f"image written in {time.perf_counter() - started:.1f} s: {sent} records, "
          f"{size / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--examples", type=int, default=0,
                        help="labelled examples for a shared champion (0: no shared champion)")
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    with given_or_local(args.bootstrap, "fraud-stream-merchants-") as bootstrap:
        application = f"measure-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        events = produce_feed(bootstrap, f"{application}.merchant-feed", args.merchants,
                              args.examples)
        print(f"produced {events:,} feed events for {args.merchants:,} merchants in "
              f"{time.perf_counter() - started:.1f} s")
        shared_model = args.examples > 0
        pipeline, feed = scorer(bootstrap, application, shared_model)
        rebuild(pipeline, feed, "from the whole feed")
        write_image(pipeline, feed)
        feed.close()
        del pipeline, feed
        pipeline, feed = scorer(bootstrap, application, shared_model)
        rebuild(pipeline, feed, "from the image")
        feed.close()


if __name__ == "__main__":
    main()
