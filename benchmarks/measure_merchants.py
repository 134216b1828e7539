"""Measure what issue 12 asks to report: the time and memory to restore (rebuild) the shared
merchant table of 1,000,000 merchants from the merchant feed on the real broker.

    python -m benchmarks.measure_merchants --merchants 1000000 [--bootstrap HOST:PORT]

Each merchant gets one transaction and one label, spread over 4 feed partitions in records of
1,000 events, as checkpoints write them; then a scorer's `MerchantFeed.rebuild` reads the
feed back and folds it. Without --bootstrap a local broker is started on a free port and
stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.assembly import pipeline_config, state_key
from stream.config import load_settings
from stream.core.features.merchant_table import LABEL, TX
from stream.core.pipeline import Pipeline
from stream.devtools.broker import LocalBroker, find_free_port
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting
from stream.observability.metrics import Metrics
from stream.serving.merchant_feed import MerchantFeed
from stream.state.merchant_feed import encode_feed

PARTITIONS = 4
PER_RECORD = 1000


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def produce_feed(bootstrap: str, topic: str, merchants: int) -> int:
    """One transaction and one label per merchant, partition by partition; returns events."""
    settings = load_settings(environ={}, bootstrap_servers=bootstrap)
    clients = connect(settings)
    admin = clients.admin()
    admin.create_topics({topic: (PARTITIONS, 1, {})})
    admin.close()
    producer = clients.producer(linger_ms=20.0)
    events = 0
    for partition in range(PARTITIONS):
        seq, batch = 1, []
        for i in range(partition, merchants, PARTITIONS):
            t = 1_767_225_600.0 + i * 0.01
            batch += [(t, TX, f"m{i:07d}", 0.0), (t + 1.0, LABEL, f"m{i:07d}", 1.0 if i % 97 == 0
                                                  else 0.0)]
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


def rebuild(bootstrap: str, application: str) -> None:
    settings = load_settings(environ={}, bootstrap_servers=bootstrap, group_id=application)
    pipeline = Pipeline(pipeline_config(settings, state_key(settings)),
                        merchant_partitions=PARTITIONS, merchant_feed=True)
    feed = MerchantFeed(settings, pipeline, connect(settings), Metrics(CollectorRegistry()),
                        PARTITIONS)
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    folded = feed.rebuild()
    elapsed = time.perf_counter() - started
    table = pipeline.merchants
    assert table is not None
    print(f"rebuilt {folded:,} events into {len(table):,} merchants in {elapsed:.1f} s "
          f"({folded / elapsed:,.0f} events/s); resident memory {before:.0f} -> "
          f"{rss_mib():.0f} MiB; {table.waiting:,} events wait behind the frontier")
    feed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = LocalBroker(port=find_free_port(),
                             data_dir=Path(tempfile.mkdtemp(prefix="fraud-stream-merchants-")))
        bootstrap = broker.start()
    try:
        application = f"measure-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        events = produce_feed(bootstrap, f"{application}.merchant-feed", args.merchants)
        print(f"produced {events:,} feed events for {args.merchants:,} merchants in "
              f"{time.perf_counter() - started:.1f} s")
        rebuild(bootstrap, application)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
