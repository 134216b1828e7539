"""Measure what issue 3 asks to report: resident memory while 1,000,000 distinct cards flow
through a scorer partition with eviction configured, and the time to restore a large state
from the changelog on the real broker.

    python benchmarks/measure_state.py --cards 1000000 [--bootstrap HOST:PORT]

Without --bootstrap a local broker is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import uuid

from stream.assembly import state_key
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.devtools.broker import given_or_local
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting
from stream.kafka.restore import read_partition
from stream.state.changelog import encode_changes


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def flow(cards: int, ttl_s: float, span_s: float) -> Pipeline:
    """`cards` distinct cards, each seen twice, spread over `span_s` of event time."""
    pipe = Pipeline(PipelineConfig(card_ttl_s=ttl_s, evict_every=10_000, track_changes=False))
    step = span_s / cards
    start = rss_mib()
    peak = start
    for i in range(cards):
        ts = 1_700_000_000.0 + i * step
        for k in (0, 1):
            pipe.score(Transaction(f"t{i}-{k}", f"card-{i:09d}", f"m{i % 5000}", 10.0 + i % 90,
                                   ts + k, bool(i % 97 == 0)), 0)
        if i % 100_000 == 0:
            gc.collect()
            peak = max(peak, rss_mib())
            print(f"  {i:>9,} cards seen: {pipe.state_sizes()['cards']:>8,} live, "
                  f"RSS {rss_mib():7.1f} MiB")
    print(f"eviction: {cards:,} distinct cards over {span_s / 86400:.0f} days, ttl "
          f"{ttl_s / 86400:.1f} d -> {pipe.state_sizes()['cards']:,} live, RSS start "
          f"{start:.0f} MiB, peak {peak:.0f} MiB")
    return pipe


def restore_time(bootstrap: str, cards: int) -> None:
    """Write `cards` card rows (4 partitions) to a changelog, then time a full restore."""
    topic = f"measure-changelog-{uuid.uuid4().hex[:6]}"
    settings = load_settings(environ={}, bootstrap_servers=bootstrap)
    clients = connect(settings)
    admin = clients.admin()
    admin.create_topics({topic: (4, 1, {"cleanup.policy": "compact"})})
    admin.close()
    signer = state_key(settings)
    pipe = Pipeline(PipelineConfig(track_changes=True, state_key=signer))
    for i in range(cards):
        pipe.score(Transaction(f"t{i}", f"card-{i:09d}", f"m{i % 5000}", 25.0,
                               1_700_000_000.0 + i, None), i % 4)
    producer = clients.producer(linger_ms=20.0)
    written = 0
    for partition in range(4):
        changes = pipe.drain_changes(partition)
        changes.pending = {}
        for key, value in encode_changes(changes):
            send_waiting(producer, topic, key, value, partition)
            written += 1
    producer.close(120.0)
    started = time.perf_counter()
    target = Pipeline(PipelineConfig(state_key=signer))
    for partition in range(4):
        reader = clients.reader(bulk=True)
        restored = read_partition(reader, topic, partition)
        reader.close()
        target.restore_from_changelog(partition, restored)
    elapsed = time.perf_counter() - started
    print(f"restore: {written:,} changelog records ({cards:,} cards, 4 partitions) in "
          f"{elapsed:.1f} s = {written / elapsed:,.0f} records/s; "
          f"{target.state_sizes()['cards']:,} cards restored")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--restore-only", action="store_true")
    args = parser.parse_args()
    if not args.restore_only:
        flow(args.cards, ttl_s=86400.0, span_s=30 * 86400.0)
    with given_or_local(args.bootstrap) as bootstrap:
        restore_time(bootstrap, args.cards)


if __name__ == "__main__":
    main()
