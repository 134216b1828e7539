"""`produce_events`: transactions keyed by card, labels held back in event time; and
`produce_stream`: the generator's merged stream of transactions and realistically late labels.

The first two tests need the broker; the others drive a fake producer (no network) to pin down
the ordering, pacing and failure rules precisely.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from stream.devtools.producer import ProduceError, produce_events, produce_stream
from stream.devtools.synthetic import LabelModel, TrafficConfig, generate, generate_stream
from stream.kafka.classify import ClientError
from stream.kafka.testing import MemoryProducer

DELAY_S = 2 * 3600.0


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_transactions_without_labels_and_labels_in_due_order(
    kafka_bootstrap: str, clients: Any, new_topic: Callable[..., str]
) -> None:
    transactions, labels = new_topic(partitions=1), new_topic(partitions=1)
    events = list(generate(TrafficConfig(400, fraud_rate=0.1, seed=9)))
    producer = clients.producer(linger_ms=5.0)
    try:
        stats = produce_events(producer, events, transactions, labels_topic=labels,
                               label_delay_s=DELAY_S, progress=False)
    finally:
        producer.close(10.0)
    assert (stats.sent, stats.labels_sent) == (400, 400)

    sent = consume_all(kafka_bootstrap, transactions, 400)
    assert len(sent) == 400
    bodies = [orjson.loads(r.value) for r in sent]
    assert all("is_fraud" not in b for b in bodies)
    assert [r.key.decode() for r in sent] == [e["card_id"] for e in events]
    assert bodies == [{k: v for k, v in e.items() if k != "is_fraud"} for e in events]

    got = consume_all(kafka_bootstrap, labels, 400)
    assert len(got) == 400
    by_id = {e["transaction_id"]: e for e in events}
    dues = []
    for record in got:
        label = orjson.loads(record.value)
        event = by_id[label["transaction_id"]]
        assert set(label) == {"transaction_id", "card_id", "is_fraud", "timestamp"}
        assert record.key.decode() == label["card_id"] == event["card_id"]
        assert label["is_fraud"] is event["is_fraud"]
        due = epoch(label["timestamp"])
        assert due == pytest.approx(epoch(event["timestamp"]) + DELAY_S, abs=0.002)
        dues.append(due)
    assert dues == sorted(dues)
    assert sum(orjson.loads(r.value)["is_fraud"] for r in got) == sum(
        e["is_fraud"] for e in events)


def test_a_stream_with_realistic_labels_lands_on_two_topics_keyed_by_card(
    kafka_bootstrap: str, clients: Any, new_topic: Callable[..., str]
) -> None:
    transactions, labels = new_topic(partitions=1), new_topic(partitions=1)
    config = TrafficConfig(400, fraud_rate=0.1, seed=9, labels=LabelModel(fraud_median_days=0.2,
                                                                          legit_days=0.1))
    stream = list(generate_stream(config))
    producer = clients.producer(linger_ms=5.0)
    try:
        stats = produce_stream(producer, stream, transactions, labels, progress=False)
    finally:
        producer.close(10.0)
    assert (stats.sent, stats.labels_sent) == (400, 400)

    sent = consume_all(kafka_bootstrap, transactions, 400)
    expected = [body for kind, body, _ in stream if kind == "transaction"]
    assert [orjson.loads(r.value) for r in sent] == expected
    assert [r.key.decode() for r in sent] == [e["card_id"] for e in expected]
    assert all("is_fraud" not in e for e in expected)

    got = consume_all(kafka_bootstrap, labels, 400)
    expected_labels = [body for kind, body, _ in stream if kind == "label"]
    assert [orjson.loads(r.value) for r in got] == expected_labels
    assert [r.key.decode() for r in got] == [b["card_id"] for b in expected_labels]
    truth = {e["transaction_id"]: e["is_fraud"] for e in generate(config)}
    assert {b["transaction_id"]: b["is_fraud"] for b in expected_labels} == truth
    assert any(truth.values())


class FakeProducer(MemoryProducer):
    """Records sends in order (topic, key, value); the sends whose number is in `fail_at`
    get a failed delivery report at once."""

    def __init__(self, fail_at: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.times: list[float] = []
        self.fail_at = fail_at
        self.flushes = 0

    def flush(self, timeout_s: float) -> int:
        self.flushes += 1
        return super().flush(timeout_s)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Any = None,
             on_delivery: Any = None) -> None:
        super().send(topic, key, value, partition, headers, on_delivery)
        self.records.append((topic, key, value))
        self.times.append(time.perf_counter())
        if len(self.records) in self.fail_at:
            self.unacked.pop()
            on_delivery(ClientError("broker said no"))


def test_a_label_is_sent_only_once_event_time_passes_its_due_time() -> None:
    events = list(generate(TrafficConfig(1500, fraud_rate=0.05, seed=2)))
    fake = FakeProducer()
    stats = produce_events(fake, events, "tx", labels_topic="lb", label_delay_s=DELAY_S,
                           progress=False)
    assert (stats.sent, stats.labels_sent, fake.flushes) == (1500, 1500, 1)
    watermark = float("-inf")
    stream_end = epoch(events[-1]["timestamp"])
    for topic, key, value in fake.records:
        body = orjson.loads(value)
        if topic == "tx":
            watermark = max(watermark, epoch(body["timestamp"]))
            continue
        assert key == body["card_id"].encode()
        due = epoch(body["timestamp"])
        # Sent because the stream reached it, or in the final flush after the last event.
        assert due <= watermark + 0.001 or watermark == stream_end
    early = [v for t, _, v in fake.records[:1000] if t == "lb"]
    assert early  # labels interleave with the stream, not only at the end


def test_without_delay_events_go_out_unchanged_and_raw_bytes_have_no_key() -> None:
    events: list[dict[str, Any] | bytes] = [*generate(TrafficConfig(3, seed=1)), b"{oops"]
    fake = FakeProducer()
    stats = produce_events(fake, events, "tx", progress=False)
    assert stats.labels_sent == 0
    assert [orjson.loads(v) for _, _, v in fake.records[:3]] == events[:3]
    assert fake.records[3] == ("tx", None, b"{oops")
    first = events[0]
    assert isinstance(first, dict) and fake.records[0][1] == first["card_id"].encode()


def test_events_that_cannot_carry_a_label_are_left_for_the_scorer() -> None:
    events: list[dict[str, Any] | bytes] = [
        {"transaction_id": "t1", "card_id": "c1", "timestamp": "yesterday", "is_fraud": True},
        {"transaction_id": "t2", "card_id": "c1", "timestamp": 1767225600000},  # unlabelled
        {"transaction_id": "t3", "card_id": "c2", "timestamp": 1767225600000, "is_fraud": 1},
    ]
    fake = FakeProducer()
    stats = produce_events(fake, events, "tx", labels_topic="lb", label_delay_s=0.0,
                           progress=False)
    bodies = [(t, orjson.loads(v)) for t, _, v in fake.records]
    assert bodies[0] == ("tx", events[0])  # bad timestamp: untouched, no label
    assert bodies[1] == ("tx", events[1])
    assert bodies[2] == ("tx", {"transaction_id": "t3", "card_id": "c2",
                                "timestamp": 1767225600000})
    assert bodies[3] == ("lb", {"transaction_id": "t3", "card_id": "c2", "is_fraud": True,
                                "timestamp": "2026-01-01T00:00:00.000Z"})
    assert stats.labels_sent == 1


def test_rate_paces_sends_evenly() -> None:
    events = list(generate(TrafficConfig(60, seed=1)))
    fake = FakeProducer()
    stats = produce_events(fake, events, "tx", rate=200.0, progress=False)
    assert stats.seconds >= 59 / 200 * 0.95
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert max(gaps) < 0.05  # smooth: no one-second bursts


def test_failed_sends_raise() -> None:
    events = list(generate(TrafficConfig(50, seed=1)))
    with pytest.raises(ProduceError, match="1 message"):
        produce_events(FakeProducer(fail_at=frozenset({10})), events, "tx", progress=False)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="labels_topic"):
        produce_events(FakeProducer(), [], "tx", label_delay_s=1.0, progress=False)
    with pytest.raises(ValueError, match="rate"):
        produce_events(FakeProducer(), [], "tx", rate=0.0, progress=False)


def test_produce_stream_sends_in_stream_order_and_paces_only_transactions() -> None:
    stream = list(generate_stream(TrafficConfig(300, fraud_rate=0.05, seed=3,
                                                labels=LabelModel.constant(600.0))))
    fake = FakeProducer()
    stats = produce_stream(fake, stream, "tx", "lb", rate=2000.0, progress=False)
    assert (stats.sent, stats.labels_sent, fake.flushes) == (300, 300, 1)
    assert [(t, k, orjson.loads(v)) for t, k, v in fake.records] == [
        ("tx" if kind == "transaction" else "lb", body["card_id"].encode(), body)
        for kind, body, _ in stream]
    labels_early = [t for t, _, _ in fake.records[:300]].count("lb")
    assert labels_early > 0  # labels interleave with the transactions
    assert stats.seconds >= 299 / 2000 * 0.9


def test_produce_stream_failures_and_bad_records_raise() -> None:
    stream = list(generate_stream(TrafficConfig(50, seed=1)))
    with pytest.raises(ProduceError, match="1 message"):
        produce_stream(FakeProducer(fail_at=frozenset({60})), stream, "tx", "lb",
                       progress=False)
    with pytest.raises(ValueError, match="unknown record kind"):
        produce_stream(FakeProducer(), [("verdict", {"card_id": "c"}, None)], "tx", "lb",
                       progress=False)
    with pytest.raises(ValueError, match="rate"):
        produce_stream(FakeProducer(), [], "tx", "lb", rate=0.0, progress=False)
