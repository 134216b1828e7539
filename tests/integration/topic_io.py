"""Producing to and reading from a topic in integration tests, with kafka-python's own
clients (independent of the adapters under test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer


def produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False,
                             group_id=None)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    # Read until the expected count, then a little longer to catch any duplicate.
    quiet_until = None
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        if len(records) >= expected:
            quiet_until = quiet_until or time.monotonic() + 1.5
            if time.monotonic() > quiet_until:
                break
    consumer.close()
    return records


def scorer_topics(new_topic: Callable[..., str], partitions: int = 2) -> dict[str, str]:
    """Fresh input, labels, verdicts, dead-letter and changelog topics, as settings names."""
    return {
        "input_topic": new_topic(partitions=partitions, prefix="tx"),
        "labels_topic": new_topic(partitions=partitions, prefix="labels"),
        "output_topic": new_topic(partitions=partitions, prefix="verdicts"),
        "dlq_topic": new_topic(partitions=1, prefix="dlq"),
        "changelog_topic": new_topic(partitions=partitions, prefix="changelog"),
    }
