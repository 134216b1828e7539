"""A backlog of weeks of transactions with labels a week late, consumed by `stream run`, gives
exactly the scores of an in-process replay of the same records in event-time order.

Before the live loop aligned its topics in event time, the labels partitions (smaller
records, fetched independently) ran days ahead of the transactions: their labels were held as
"early" and applied the moment their transaction was scored, a week before they were known.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
from durability_support import make_topics, new_group, read_committed

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_label, decode_transaction
from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import consumed_order, partition_for
from stream.core.pipeline import Pipeline
from stream.devtools.producer import produce_events
from stream.devtools.synthetic import TrafficConfig, generate

WEEK_S = 7 * 86400.0
COUNT = 12_000


class Recorder:
    """A producer (stream.kafka.clients.Producer) that remembers what it sent, in order."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, *args: Any,
             **kwargs: Any) -> None:
        self.producer.send(topic, key, value, *args, **kwargs)
        assert value is not None
        self.sent.append((topic, value))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)


def test_a_backlog_with_week_late_labels_scores_as_the_in_process_replay(
    kafka_bootstrap: str, kafka_client: str, clients: Any, new_topic: Callable[..., str]
) -> None:
    topics = make_topics(new_topic)
    events = list(generate(TrafficConfig(COUNT, fraud_rate=0.03, seed=5, n_cards=400)))
    recorder = Recorder(clients.producer(linger_ms=5.0))
    stats = produce_events(recorder, events, topics.input, labels_topic=topics.labels,
                           label_delay_s=WEEK_S, progress=False)
    recorder.producer.close(10.0)
    assert stats.labels_sent == COUNT

    run = subprocess.run(
        [sys.executable, "-m", "stream", "--bootstrap-servers", kafka_bootstrap, "run",
         "--group-id", new_group(), "--max-events", str(COUNT), *topics.flags()],
        env={**os.environ, "FRAUDSTREAM_KAFKA_CLIENT": kafka_client,
             "FRAUDSTREAM_MERCHANT_STATE": "shared"},
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = {body["transaction_id"]: body["score"] for body in
                (orjson.loads(r.value) for r in
                 read_committed(kafka_bootstrap, topics.verdicts, COUNT, settle_s=1.0))}
    assert len(verdicts) == COUNT

    # The same records, in process, in the order a scorer owning every partition sees them.
    items: list[Transaction | Label] = [
        decode_transaction(value) if topic == topics.input else decode_label(value)
        for topic, value in recorder.sent]
    expected, learned = replay_in_process(items, 4)
    assert learned > COUNT // 3  # a week of the stream's labels were due before its end
    assert verdicts == expected


def replay_in_process(items: list[Transaction | Label], partitions: int,
                      **overrides: Any) -> tuple[dict[str, float], int]:
    """Scores of one in-process pipeline owning every partition, with the shared merchant
    table, each partition's watermark moved by its next record; `overrides` are settings
    (the shared champion's, say)."""
    settings = load_settings(environ={}, **overrides)
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=partitions)
    # Each source (topic partition) is consumed in offset order: its next record's time, and
    # the earlier of a partition's two sources is what the live intake knows as its head.
    times: dict[tuple[int, int], list[float]] = {}
    for item in items:
        source = (0 if isinstance(item, Transaction) else 1,
                  partition_for(item.card_id.encode(), partitions))
        times.setdefault(source, []).append(item.timestamp)
    at = dict.fromkeys(times, 0)

    def head(partition: int) -> float:
        nexts = [times[s][at[s]] for s in ((0, partition), (1, partition))
                 if s in times and at[s] < len(times[s])]
        return min(nexts, default=math.inf)

    order = list(consumed_order(items, partitions))
    for partition in range(partitions):
        pipeline.lookahead(partition, head(partition))
    expected: dict[str, float] = {}
    learned = 0
    for partition, item in order:
        if isinstance(item, Transaction):
            expected[item.transaction_id] = pipeline.score(item, partition).score
        else:
            learned += pipeline.learn_label(item) == "learned"
        at[(0 if isinstance(item, Transaction) else 1, partition)] += 1
        pipeline.lookahead(partition, head(partition))
    assert pipeline.merchants is not None and pipeline.merchants.stale_reads == 0
    return expected, learned
