"""Duplicates and corrections through the real changelog (issue 13, item 6), on both clients: a
new scorer process restores what the first one decided and learned, answers producer retries
with the first verdicts, learns the corrections and ignores the repeated labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from durability_support import make_topics, new_group, produce_traffic, read_committed
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.contracts.codec import format_time, parse_timestamp
from stream.serving.wiring import run_scorer


def _send(bootstrap: str, topic: str, values: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=value["card_id"].encode(), value=orjson.dumps(value))
    producer.flush()
    producer.close()


def test_a_restarted_scorer_answers_duplicates_and_learns_corrections(
    kafka_bootstrap: str, kafka_client: str, new_topic: Callable[..., str]
) -> None:
    topics = make_topics(new_topic)
    events = produce_traffic(kafka_bootstrap, topics.input, 2_000, seed=31)
    base = {"bootstrap_servers": kafka_bootstrap, "group_id": new_group(),
            "kafka_client": kafka_client, "checkpoint_interval_ms": 50.0, **topics.settings()}
    assert run_scorer(load_settings(environ={}, max_events=2_000, **base),
                      CollectorRegistry()).verdicts == 2_000

    # A payment service retries its last 50 events; case management reverses 20 labels and
    # sends 5 others again, unchanged.
    retried = events[-50:]
    later = format_time(parse_timestamp(events[-1]["timestamp"]) + 1_000.0)
    flipped = [{"transaction_id": e["transaction_id"], "card_id": e["card_id"],
                "is_fraud": not e["is_fraud"], "timestamp": later} for e in events[100:120]]
    repeated = [{"transaction_id": e["transaction_id"], "card_id": e["card_id"],
                 "is_fraud": e["is_fraud"], "timestamp": later} for e in events[200:205]]
    _send(kafka_bootstrap, topics.input, retried)
    _send(kafka_bootstrap, topics.labels, flipped + repeated)

    registry = CollectorRegistry()
    second = run_scorer(load_settings(environ={}, idle_exit_s=3.0, **base), registry)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert second.transactions == 50 and second.verdicts == 50 and second.duplicates == 50
    assert sample("fraudstream_events_total", outcome="duplicate") == 50
    assert sample("fraudstream_events_total", outcome="scored") == 0
    assert sample("fraudstream_labels_total", source="topic", outcome="corrected") == 20
    assert sample("fraudstream_labels_total", source="topic", outcome="repeated") == 5
    assert sample("fraudstream_labels_total", source="topic", outcome="held") == 0
    assert sample("fraudstream_model_updates_total") == 20

    verdicts: dict[str, list[tuple[float, str]]] = {}
    for record in read_committed(kafka_bootstrap, topics.verdicts, 2_050):
        body = orjson.loads(record.value)
        verdicts.setdefault(body["transaction_id"], []).append((body["score"], body["decision"]))
    assert sum(map(len, verdicts.values())) == 2_050
    for event in retried:  # the first verdict again, restored from the changelog
        first, again = verdicts[event["transaction_id"]]
        assert first == again
