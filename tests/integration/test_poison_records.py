"""A poison record never stalls the scorer (issue 13, item 1), on the real broker with both
client adapters: the issue's three oversized inputs between valid traffic, under exactly-once
and at-least-once. Every valid event gets its verdict, each poison one a dead letter with its
reason, and the scorer neither rewinds in a loop nor exits with a traceback.

The broker's default limit (message.max.bytes, ~1 MB) is hit for real: with the default
settings the inputs themselves are ~1 MB; with raised field limits the output topics are
created with a smaller `max.message.bytes`, so the broker refuses the verdict and the
changelog row, and the scorer must find the record that made them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from topic_io import produce, read_all

from stream.config import Settings, load_settings
from stream.devtools.synthetic import TrafficConfig, generate
from stream.serving.ledger import RunResult
from stream.serving.wiring import build_scorer

INVALID = b"\x01" * 200_000  # not JSON; escaped in a dead letter it would be 1.2 MB


def _poisons(timestamp: Any, ids: int, merchant: int) -> list[tuple[bytes | None, bytes]]:
    """The issue's three: the invalid payload; a valid event whose ids make its verdict
    large (no key: the verdict is keyed by its card id); a valid event with a long
    merchant_id (its changelog key `n:<merchant>` is as long)."""
    base = {"amount": 10.0, "timestamp": timestamp}
    big_ids = {**base, "transaction_id": "T" * ids, "card_id": "C" * ids,
               "merchant_id": "m-poison"}
    big_merchant = {**base, "transaction_id": "tx-big-merchant", "card_id": "c-poison",
                    "merchant_id": "M" * merchant}
    return [(b"poison", INVALID), (None, orjson.dumps(big_ids)),
            (b"c-poison", orjson.dumps(big_merchant))]


@pytest.fixture
def make_topic(admin: Any) -> Iterator[Callable[..., str]]:
    """`make_topic(prefix, partitions, max_message_bytes=None)`: a fresh topic, deleted after
    the test; `max_message_bytes` sets the topic's own max.message.bytes."""
    created: list[str] = []

    def make(prefix: str, partitions: int = 2, max_message_bytes: int | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        options: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
        if max_message_bytes is not None:
            options["configs"] = {"max.message.bytes": str(max_message_bytes)}
        admin.create_topics({name: options}, wait_for_metadata=True)
        created.append(name)
        return name

    yield make
    admin.delete_topics(created, raise_errors=False)


def _topics(make_topic: Callable[..., str], verdicts_limit: int | None = None,
            changelog_limit: int | None = None) -> dict[str, str]:
    return {"input_topic": make_topic("tx"), "labels_topic": make_topic("labels"),
            "output_topic": make_topic("verdicts", max_message_bytes=verdicts_limit),
            "dlq_topic": make_topic("dlq", partitions=1),
            "changelog_topic": make_topic("changelog", max_message_bytes=changelog_limit)}


def _traffic(bootstrap: str, topic: str, poisons: list[tuple[bytes | None, bytes]]
             ) -> tuple[list[str], int]:
    """150 valid events, the poisons, 150 more; returns the valid ids and the input count."""
    events = list(generate(TrafficConfig(count=300, fraud_rate=0.05, seed=21, n_cards=40)))
    valid = [(e["card_id"].encode(), orjson.dumps(e)) for e in events]
    produce(bootstrap, topic, valid[:150] + poisons + valid[150:])
    return [e["transaction_id"] for e in events], len(valid) + len(poisons)


def _first_timestamp() -> Any:
    return next(iter(generate(TrafficConfig(count=1, seed=21, n_cards=40))))["timestamp"]


def _settings(bootstrap: str, kafka_client: str, topics: dict[str, str],
              **extra: Any) -> Settings:
    return load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=kafka_client,
                         group_id=f"poison-{uuid.uuid4().hex[:8]}", **topics, **extra)


def _run(settings: Settings, registry: CollectorRegistry, timeout_s: float = 180.0
         ) -> RunResult:
    """The scorer in a thread; one that has not finished in `timeout_s` (rewinding for ever,
    as it did) is stopped and fails the test."""
    scorer = build_scorer(settings, registry)
    outcome: dict[str, Any] = {}

    def _loop() -> None:
        try:
            outcome["result"] = scorer.loop.run()
        except Exception as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=_loop, daemon=True)
    thread.start()
    thread.join(timeout_s)
    stalled = thread.is_alive()
    if stalled:
        scorer.loop.stop()
        thread.join(60)
    scorer.close()
    assert not stalled, f"the scorer did not finish in {timeout_s:.0f}s: {scorer.loop.result}"
    assert "error" not in outcome, outcome.get("error")
    result: RunResult = outcome["result"]
    return result


def _letters(bootstrap: str, topic: str, expected: int) -> list[tuple[Any, dict[str, Any]]]:
    return [(r, orjson.loads(r.value)) for r in read_all(bootstrap, topic, expected)]


def _everything(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic written without transactions (at-least-once: duplicates
    included), however many there are."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    total = sum(consumer.end_offsets(partitions).values())
    consumer.close()
    records = read_all(bootstrap, topic, total, timeout_s=60.0)
    assert len(records) == total
    return records


def _assert_truncated(letter: dict[str, Any], original: bytes) -> None:
    assert letter["payload_truncated"] is True
    assert letter["payload_bytes"] == len(original)
    assert letter["payload_sha256"] == hashlib.sha256(original).hexdigest()
    assert original.startswith(letter["payload"].encode())


def test_the_issues_poison_inputs_are_dead_lettered_at_once_and_the_rest_is_scored(
    kafka_bootstrap: str, kafka_client: str, make_topic: Callable[..., str]
) -> None:
    """Default settings, exactly-once: the ids are too long (field_too_long) and the invalid
    payload's dead letter is cut to fit; nothing fails, nothing rewinds."""
    topics = _topics(make_topic)
    poisons = _poisons(_first_timestamp(), ids=450_000, merchant=1_000_000)
    valid_ids, total = _traffic(kafka_bootstrap, topics["input_topic"], poisons)
    registry = CollectorRegistry()
    result = _run(_settings(kafka_bootstrap, kafka_client, topics, max_events=total), registry)
    assert (result.transactions, result.verdicts, result.dead_letters) == (303, 300, 3)

    verdicts = read_all(kafka_bootstrap, topics["output_topic"], 300)
    assert Counter(orjson.loads(r.value)["transaction_id"] for r in verdicts) == Counter(
        valid_ids)
    letters = {body["payload_sha256"]: (record, body)
               for record, body in _letters(kafka_bootstrap, topics["dlq_topic"], 3)}
    assert len(letters) == 3
    for (_, original), reason in zip(poisons, ["invalid_json", "field_too_long",
                                               "field_too_long"], strict=True):
        record, body = letters[hashlib.sha256(original).hexdigest()]
        assert body["reason"] == reason
        _assert_truncated(body, original)
        assert len(record.value) + len(record.key or b"") < 100_000
    sample = registry.get_sample_value
    assert sample("fraudstream_commits_total", {"result": "failed"}) == 0
    assert sample("fraudstream_events_total", {"outcome": "scored"}) == 300
    assert sample("fraudstream_events_total", {"outcome": "dead_lettered"}) == 3
    assert sample("fraudstream_dead_letters_total", {"reason": "field_too_long"}) == 2


def test_at_least_once_dead_letters_them_and_exits_cleanly_from_the_command_line(
    kafka_bootstrap: str, kafka_client: str, make_topic: Callable[..., str]
) -> None:
    """`stream run --guarantee at-least-once`, which exited with a raw KafkaException
    traceback on every start."""
    topics = _topics(make_topic)
    poisons = _poisons(_first_timestamp(), ids=450_000, merchant=1_000_000)
    valid_ids, total = _traffic(kafka_bootstrap, topics["input_topic"], poisons)
    flags = [arg for name, topic in topics.items()
             for arg in (f"--{name.replace('_', '-')}", topic)]
    args = [sys.executable, "-m", "stream", "--bootstrap-servers", kafka_bootstrap,
            "--kafka-client", kafka_client, "run", "--guarantee", "at-least-once",
            "--group-id", f"poison-{uuid.uuid4().hex[:8]}", "--max-events", str(total),
            *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    proc = subprocess.run(args, capture_output=True, timeout=240, env=env)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "KafkaException" not in stderr
    assert "checkpoint failed" not in stderr
    verdicts = read_all(kafka_bootstrap, topics["output_topic"], 300)
    assert Counter(orjson.loads(r.value)["transaction_id"] for r in verdicts) == Counter(
        valid_ids)
    letters = _letters(kafka_bootstrap, topics["dlq_topic"], 3)
    assert sorted(body["reason"] for _, body in letters) == [
        "field_too_long", "field_too_long", "invalid_json"]


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_outputs_the_broker_refuses_dead_letter_their_record_and_scoring_goes_on(
    kafka_bootstrap: str, kafka_client: str, make_topic: Callable[..., str], guarantee: str
) -> None:
    """Field limits raised, and output topics that take less than the scorer may write: the
    broker itself refuses the large verdict (verdicts' max.message.bytes 200 KB) and the
    long merchant's changelog row (changelog's 90 KB). Each poison record is dead-lettered
    as output_too_large after a few rewinds, every valid event is scored, and the run
    ends."""
    topics = _topics(make_topic, verdicts_limit=200_000, changelog_limit=90_000)
    poisons = _poisons(_first_timestamp(), ids=80_000, merchant=99_000)
    valid_ids, total = _traffic(kafka_bootstrap, topics["input_topic"], poisons)
    registry = CollectorRegistry()
    settings = _settings(kafka_bootstrap, kafka_client, topics, max_events=total,
                         guarantee=guarantee, max_field_length=100_000,
                         checkpoint_interval_ms=50.0, max_outage_s=120.0)
    result = _run(settings, registry)
    assert result.transactions == 303

    if guarantee == "exactly-once":
        verdicts = Counter(orjson.loads(r.value)["transaction_id"]
                           for r in read_all(kafka_bootstrap, topics["output_topic"], 300))
        assert verdicts == Counter(valid_ids)
        letters = {(body["source"]["offset"], body["reason"])
                   for _, body in _letters(kafka_bootstrap, topics["dlq_topic"], 3)}
    else:
        # At least once: a failed checkpoint's acknowledged outputs may be sent again (the
        # long merchant's verdict too, sent before its changelog row was refused); none is
        # lost.
        verdicts = Counter(orjson.loads(r.value)["transaction_id"]
                           for r in _everything(kafka_bootstrap, topics["output_topic"]))
        assert set(verdicts) - {"tx-big-merchant"} == set(valid_ids)
        letters = {(orjson.loads(r.value)["source"]["offset"], orjson.loads(r.value)["reason"])
                   for r in _everything(kafka_bootstrap, topics["dlq_topic"])}
    reasons = sorted(reason for _, reason in letters)
    assert reasons == ["invalid_json", "output_too_large", "output_too_large"], letters
    sample = registry.get_sample_value
    assert sample("fraudstream_dead_letters_total", {"reason": "output_too_large"}) == 2
    assert sample("fraudstream_events_total", {"outcome": "dead_lettered"}) == 3
    # A record found only by checkpointing one at a time was counted as scored on its first
    # pass (README "Poison records and size limits"); a replay never counts again.
    assert 300 <= (sample("fraudstream_events_total", {"outcome": "scored"}) or 0) <= 302
    rewinds = sample("fraudstream_recoveries_total", {"reason": "output_too_large"}) or 0
    assert 2 <= rewinds <= 8  # found, not looped on
    assert sample("fraudstream_checkpoint_failure_streak") == 0
