"""Event time is bounded, on the real broker with both clients: a timestamp far from its Kafka
record timestamp, or epoch seconds sent as milliseconds, is a `timestamp_out_of_range` dead
letter and moves no partition clock; a huge integer in an extra field is scored; every
dead-letter reason is exported from the start (issue 13, items 4 and 8)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from topic_io import produce, read_all, scorer_topics

from stream.config import load_settings
from stream.contracts.codec import REASONS
from stream.devtools.synthetic import TrafficConfig, generate
from stream.serving.wiring import build_scorer

WEEK = 7 * 86400.0


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return scorer_topics(new_topic)


def test_out_of_range_event_times_are_dead_letters_and_move_no_clock(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    # Synthetic history from 2026-01-01, produced now: months older than its record
    # timestamps, which the past bound (relative to the record timestamp) must accept.
    events = list(generate(TrafficConfig(count=600, fraud_rate=0.05, seed=5, n_cards=40)))
    template = {k: v for k, v in events[0].items() if k != "is_fraud"}

    def bad(name: str, timestamp: Any) -> tuple[bytes, bytes]:
        body = {**template, "transaction_id": name, "timestamp": timestamp}
        return template["card_id"].encode(), orjson.dumps(body)

    out_of_range = [
        bad("year-9999", "9999-12-31T23:59:59Z"),
        bad("year-9999-ms", 253_402_300_799_999),
        bad("seconds-as-ms", int(time.time())),
        bad("year-1", "0001-01-01T00:00:00Z"),
    ]
    huge = {**template, "transaction_id": "huge-extra", "timestamp": events[300]["timestamp"]}
    huge_value = orjson.dumps(huge)[:-1] + b',"loyalty_points":' + b"9" * 400 + b"}"
    values = [(e["card_id"].encode(), orjson.dumps(e)) for e in events]
    mixed = (values[:200] + out_of_range[:2] + values[200:400] + [(b"c", huge_value)]
             + out_of_range[2:] + values[400:])
    produce(kafka_bootstrap, topics["input_topic"], mixed)
    future_label = orjson.dumps({"transaction_id": events[0]["transaction_id"],
                                 "card_id": events[0]["card_id"], "is_fraud": True,
                                 "timestamp": "9999-01-01T00:00:00Z"})
    produce(kafka_bootstrap, topics["labels_topic"], [(events[0]["card_id"].encode(),
                                                        future_label)])

    registry = CollectorRegistry()
    settings = load_settings(environ={}, bootstrap_servers=kafka_bootstrap,
                             kafka_client=kafka_client, group_id=f"g-{uuid.uuid4().hex[:8]}",
                             idle_exit_s=4.0, **topics)
    sample = registry.get_sample_value
    scorer = build_scorer(settings, registry)
    try:
        # Every reason is exported at zero before the first record: an alert on
        # increase(...) > 0 sees the first dead letter of each kind.
        assert all(sample("fraudstream_dead_letters_total", {"reason": r}) == 0.0
                   for r in REASONS)
        result = scorer.loop.run()
        pipeline = scorer.loop.pipeline
    finally:
        scorer.close()
    assert (result.transactions, result.verdicts) == (len(mixed), len(events) + 1)
    assert result.dead_letter_reasons == {"timestamp_out_of_range": 5}
    latest = time.time() + WEEK
    assert pipeline.clock < latest
    assert all(state.clock < latest for state in pipeline.partitions.values())
    assert pipeline.state_sizes()["cards"] == len({e["card_id"] for e in events})

    verdicts = [orjson.loads(r.value) for r in
                read_all(kafka_bootstrap, topics["output_topic"], len(events) + 1)]
    ids = {v["transaction_id"] for v in verdicts}
    assert "huge-extra" in ids and len(verdicts) == len(events) + 1
    assert not ids & {"year-9999", "year-9999-ms", "seconds-as-ms", "year-1"}

    letters = [orjson.loads(r.value) for r in read_all(kafka_bootstrap, topics["dlq_topic"], 5)]
    assert Counter(d["reason"] for d in letters) == {"timestamp_out_of_range": 5}
    by_payload = {orjson.loads(d["payload"]).get("transaction_id", "label"): d["error"]
                  for d in letters}
    assert "sends seconds where the contract wants epoch milliseconds" in \
        by_payload["seconds-as-ms"]
    assert "after the record's Kafka timestamp" in by_payload["year-9999"]
    assert "before the record's Kafka timestamp" in by_payload["year-1"]
    assert sample("fraudstream_dead_letters_total", {"reason": "timestamp_out_of_range"}) == 5
    assert sample("fraudstream_dead_letters_total", {"reason": "invalid_json"}) == 0.0
