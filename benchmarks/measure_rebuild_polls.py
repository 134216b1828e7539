"""Measure what sizing a rebuild's polls to the feed records does (README "Benchmark", "A
rebuild's polls sized to the feed records"): the most events the merchant table queued, the
process's peak RSS and the time of one `MerchantFeed.rebuild` of a large synthetic feed, with
polls of 1,000 records (`fixed`, before 4aab38c) and polls sized to the records (`sized`).

    python -m benchmarks.measure_rebuild_polls [--transactions 100000] [--rounds 2]
        [--bootstrap HOST:PORT]

The feed is `stream.devtools.feed.synthetic_feed` over 4 partitions (a record every 100
transactions of a partition, with their labels and labelled examples). Each rebuild runs in
a process of its own, so that its peak RSS is its own; the modes alternate, on both clients.
Without --bootstrap a local broker is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import uuid

from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import Settings, load_settings
from stream.core.pipeline import Pipeline
from stream.devtools.broker import given_or_local
from stream.devtools.feed import synthetic_feed
from stream.kafka.clients import connect
from stream.observability.metrics import Metrics
from stream.serving import merchant_feed

PARTITIONS = 4


def _settings(bootstrap: str, application: str, client: str = "librdkafka") -> Settings:
    return load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=client,
                         group_id=application, merchant_state="shared", model_state="shared",
                         model_epoch_s=60.0)


def _pipeline(settings: Settings) -> Pipeline:
    return Pipeline(pipeline_config(settings), model_version(settings),
                    merchant_partitions=PARTITIONS, merchant_feed=True)


def produce(bootstrap: str, application: str, transactions: int) -> int:
    """The synthetic feed on `<application>.merchant-feed`; returns its records."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    settings = _settings(bootstrap, application)
    timeline = _pipeline(settings).timeline
    assert timeline is not None
    records = synthetic_feed(PARTITIONS, transactions, len(timeline.names), publish_every=100)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(settings.merchant_feed_topic, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             max_request_size=2_000_000)
    for partition, raws in records.items():
        for raw in raws:
            producer.send(settings.merchant_feed_topic, value=raw, partition=partition)
    producer.flush()
    producer.close()
    return sum(len(raws) for raws in records.values())


def rebuild(bootstrap: str, application: str, client: str, mode: str) -> str:
    """One rebuild in this process; its figures as one line."""
    if mode == "fixed":
        merchant_feed.rebuild_poll_size = lambda most, *_: most  # type: ignore[assignment]
    settings = _settings(bootstrap, application, client)
    pipeline = _pipeline(settings)
    feed = merchant_feed.MerchantFeed(settings, pipeline, connect(settings),
                                      Metrics(CollectorRegistry()), PARTITIONS)
    started = time.perf_counter()
    folded = feed.rebuild(stall_s=60.0)
    elapsed = time.perf_counter() - started
    feed.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (f"{client:12} {mode:5}: {folded:,} events in {elapsed:.1f} s, at most "
            f"{feed.rebuild_queued_peak:,} queued, {feed.rebuild_pauses} pauses, "
            f"peak RSS {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000,
                        help="transactions per partition")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--child", nargs=3, metavar=("APPLICATION", "CLIENT", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(rebuild(args.bootstrap, *args.child), flush=True)
        return
    with given_or_local(args.bootstrap, "fraud-stream-rebuild-") as bootstrap:
        application = f"polls-{uuid.uuid4().hex[:8]}"
        print(f"produced {produce(bootstrap, application, args.transactions):,} feed records")
        for _ in range(args.rounds):
            for client in ("librdkafka", "kafka-python"):
                for mode in ("fixed", "sized"):
                    subprocess.run([sys.executable, "-m", "benchmarks.measure_rebuild_polls",
                                    "--bootstrap", bootstrap, "--child", application, client,
                                    mode], check=True)


if __name__ == "__main__":
    main()
