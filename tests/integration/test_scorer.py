"""produce -> score -> verdict on the real broker, with dead letters, delayed labels and
--max-events, each test on fresh uuid topics and its own consumer group."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry
from topic_io import produce as _produce
from topic_io import read_all as _read_all
from topic_io import scorer_topics

from stream.config import Settings, load_settings
from stream.contracts.codec import decode_transaction
from stream.contracts.topics import schema_validator
from stream.devtools.synthetic import TrafficConfig, generate
from stream.serving.wiring import run_scorer

VERDICT_FIELDS = {"transaction_id", "card_id", "score", "decision", "model_version", "scored_at",
                  "latency_ms", "model_state"}
MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\x00\xff\xfe binary", "invalid_json"),
    (b"[1,2,3]", "not_an_object"),
    (b'{"card_id":"c","merchant_id":"m","amount":1,"timestamp":1}', "missing_field"),
    (b'{"transaction_id":"x","card_id":7,"merchant_id":"m","amount":1,"timestamp":1}',
     "invalid_type"),
    (b'{"transaction_id":"x","card_id":"c","merchant_id":"m","amount":-4,"timestamp":1}',
     "invalid_amount"),
    (b'{"transaction_id":"x","card_id":"c","merchant_id":"m","amount":1e999,"timestamp":1}',
     "invalid_json"),
    (b'{"transaction_id":"x","card_id":"c","merchant_id":"m","amount":1,"timestamp":"soon"}',
     "invalid_timestamp"),
]


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return scorer_topics(new_topic)


def _settings(bootstrap: str, topics: dict[str, str], kafka_client: str,
              **extra: Any) -> Settings:
    return load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=kafka_client,
                         group_id=f"g-{uuid.uuid4().hex[:8]}", **topics, **extra)


def _topic_flags(topics: dict[str, str]) -> list[str]:
    """`stream run`'s options for the test's topics."""
    return ["--input-topic", topics["input_topic"], "--output-topic", topics["output_topic"],
            "--labels-topic", topics["labels_topic"], "--dlq-topic", topics["dlq_topic"],
            "--changelog-topic", topics["changelog_topic"]]


def _events(count: int, seed: int = 3) -> list[dict[str, Any]]:
    return list(generate(TrafficConfig(count=count, fraud_rate=0.05, seed=seed, n_cards=60)))


def test_every_valid_event_gets_one_verdict_and_bad_ones_dead_letter(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    events = _events(3000)
    values = [(e["card_id"].encode(), orjson.dumps(e)) for e in events]
    bad_kinds = (MALFORMED * 4)[:30]
    bad = [(b"bad-key", raw) for raw, _ in bad_kinds]
    mixed = values[:1000] + bad[:15] + values[1000:2000] + bad[15:] + values[2000:]
    _produce(kafka_bootstrap, topics["input_topic"], mixed)

    registry = CollectorRegistry()
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=len(mixed))
    result = run_scorer(settings, registry)
    assert (result.transactions, result.verdicts, result.dead_letters) == (3030, 3000, 30)

    verdicts = _read_all(kafka_bootstrap, topics["output_topic"], 3000)
    bodies = [orjson.loads(r.value) for r in verdicts]
    assert Counter(b["transaction_id"] for b in bodies) == Counter(
        e["transaction_id"] for e in events)
    by_id = {e["transaction_id"]: e for e in events}
    for record, body in zip(verdicts, bodies, strict=True):
        assert VERDICT_FIELDS <= body.keys()
        assert 0.0 <= body["score"] <= 1.0 and body["latency_ms"] >= 0
        assert body["decision"] in {"approve", "review", "decline"}
        assert record.key == by_id[body["transaction_id"]]["card_id"].encode()

    letters = _read_all(kafka_bootstrap, topics["dlq_topic"], 30)
    reasons = Counter(orjson.loads(r.value)["reason"] for r in letters)
    assert reasons == Counter(reason for _, reason in bad_kinds)
    for record in letters:
        body = orjson.loads(record.value)
        assert body["source"]["topic"] == topics["input_topic"] and record.key == b"bad-key"
        assert "payload" in body or "payload_b64" in body

    sample = registry.get_sample_value
    assert sample("fraudstream_events_total", {"outcome": "scored"}) == 3000
    assert sample("fraudstream_events_total", {"outcome": "dead_lettered"}) == 30
    assert sample("fraudstream_dead_letters_total", {"reason": "invalid_json"}) == sum(
        1 for _, reason in bad_kinds if reason == "invalid_json")
    assert sum(sample("fraudstream_verdicts_total", {"decision": d}) or 0
               for d in ("approve", "review", "decline")) == 3000
    assert sample("fraudstream_model_updates_total") == 3000


def test_delayed_labels_on_the_labels_topic_are_learned(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    events = _events(300, seed=5)
    for event in events:
        event["label"] = event.pop("is_fraud")
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps({k: v for k, v in e.items() if k != "label"}))
              for e in events])
    registry = CollectorRegistry()
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=300)
    assert run_scorer(settings, registry).verdicts == 300
    assert registry.get_sample_value("fraudstream_model_updates_total") == 0

    labels = [(e["card_id"].encode(), orjson.dumps({
        "transaction_id": e["transaction_id"], "card_id": e["card_id"],
        "is_fraud": e["label"], "timestamp": e["timestamp"]})) for e in events[:250]]
    labels.append((b"c", orjson.dumps({"transaction_id": "unknown", "card_id": "c",
                                       "is_fraud": True, "timestamp": events[0]["timestamp"]})))
    labels.append((b"c", b"not a label"))
    _produce(kafka_bootstrap, topics["labels_topic"], labels)
    # Same group: resumes after the 300 transactions and now only sees labels.
    registry2 = CollectorRegistry()
    again = settings.model_copy(update={"max_events": None, "idle_exit_s": 3.0})
    result = run_scorer(again, registry2)
    # The decision-time records were checkpointed to the changelog with the offsets, so a
    # new process restores them and learns from every label; the unknown one is held.
    assert result.labels == 252 and result.dead_letters == 1
    assert registry2.get_sample_value(
        "fraudstream_labels_total", {"source": "topic", "outcome": "learned"}) == 250
    assert registry2.get_sample_value(
        "fraudstream_labels_total", {"source": "topic", "outcome": "held"}) == 1
    assert registry2.get_sample_value("fraudstream_model_updates_total") == 250


def test_labels_join_decision_time_records_in_one_process(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    events = _events(200, seed=9)
    tx_values, label_values = [], []
    for event in events:
        label = event.pop("is_fraud")
        tx_values.append((event["card_id"].encode(), orjson.dumps(event)))
        label_values.append((event["card_id"].encode(), orjson.dumps({
            "transaction_id": event["transaction_id"], "card_id": event["card_id"],
            "is_fraud": label, "timestamp": event["timestamp"]})))
    _produce(kafka_bootstrap, topics["input_topic"], tx_values)
    registry = CollectorRegistry()
    settings = _settings(kafka_bootstrap, topics, kafka_client, idle_exit_s=4.0)
    # Labels arrive while the scorer runs, after their transactions were scored.
    import threading

    def _late_labels() -> None:
        time.sleep(4.0)
        _produce(kafka_bootstrap, topics["labels_topic"], label_values)

    thread = threading.Thread(target=_late_labels)
    thread.start()
    settings = settings.model_copy(update={"idle_exit_s": 8.0})
    result = run_scorer(settings, registry)
    thread.join()
    assert result.verdicts == 200 and result.labels == 200
    # A label that overtakes its transaction (another partition's fetch came first) is held
    # and learned right after the transaction is scored: every label is learned once.
    outcomes = {o: registry.get_sample_value(
        "fraudstream_labels_total", {"source": "topic", "outcome": o}) or 0
        for o in ("learned", "held")}
    assert outcomes["learned"] + outcomes["held"] == 200
    assert registry.get_sample_value("fraudstream_model_updates_total") == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_max_events_commits_exits_zero_and_serves_metrics(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    port = _free_port()
    group = f"cli-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "stream", "--bootstrap-servers", kafka_bootstrap,
            "--kafka-client", kafka_client, "run",
            "--max-events", "120", "--metrics-port", str(port), "--group-id", group,
            *_topic_flags(topics)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "fraudstream_build_info" not in body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                time.sleep(0.2)
        for name in ("fraudstream_events_total", "fraudstream_verdicts_total",
                     "fraudstream_dead_letters_total", "fraudstream_processing_seconds",
                     "fraudstream_consumer_lag", "fraudstream_model_roc_auc",
                     "fraudstream_build_info"):
            assert f"# TYPE {name.removesuffix('_total')}" in body, name
        assert 'model_loops="compiled"' in body  # the scorer runs the C loops the install built
        _produce(kafka_bootstrap, topics["input_topic"],
                 [(e["card_id"].encode(), orjson.dumps(e)) for e in _events(100)]
                 + [(None, raw) for raw, _ in MALFORMED] * 3)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                             enable_auto_commit=False)
    from kafka import TopicPartition

    committed = sum(consumer.committed(TopicPartition(topics["input_topic"], p)) or 0
                    for p in (0, 1))
    consumer.close()
    assert committed == 120


def test_cli_missing_topic_is_one_line_and_nonzero(kafka_bootstrap: str,
                                                   kafka_client: str) -> None:
    args = [sys.executable, "-m", "stream", "--bootstrap-servers", kafka_bootstrap,
            "--kafka-client", kafka_client, "run",
            "--max-events", "1", "--input-topic", f"absent-{uuid.uuid4().hex[:6]}"]
    proc = subprocess.run(args, capture_output=True, timeout=60)
    assert proc.returncode != 0
    stderr = proc.stderr.decode()
    assert stderr.strip().splitlines()[-1].startswith("error: topic(s) missing")
    assert "Traceback" not in stderr


def _by_partition(records: list[Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record.partition, []).append(orjson.loads(record.value))
    return out


PER_PARTITION = {"merchant_state": "partition", "model_state": "partition"}


@pytest.mark.parametrize("state", ["partition", "shared"])
def test_cold_start_approves_while_warming_and_a_restart_keeps_the_label_count(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str], state: str
) -> None:
    """README "Cold start" on the real broker. A fresh scorer with no labels scores everything
    0.5, which the thresholds would send to review: it approves all of it and says `warming`.
    Labels then end the warm-up after `warmup_labels` of them: exactly that many of each
    partition's with a model per partition; with the shared champion (the default), one
    count over every partition's labels, as of each transaction's epoch. A restarted scorer
    restores the count (from the changelog, or the merchant feed's rebuild) and is ready at
    once."""
    events = _events(950, seed=13)
    unlabelled = [{k: v for k, v in e.items() if k != "is_fraud"} for e in events]
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps(e)) for e in unlabelled[:300]])
    registry = CollectorRegistry()
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=300,
                         **(PER_PARTITION if state == "partition" else {}))
    assert settings.model_state == state
    assert settings.warmup_labels == 500 and settings.review_threshold <= 0.5
    assert run_scorer(settings, registry).verdicts == 300
    records = _read_all(kafka_bootstrap, topics["output_topic"], 300)
    bodies = [orjson.loads(r.value) for r in records]
    assert len(bodies) == 300
    assert {(b["score"], b["decision"], b["model_state"]) for b in bodies} == {
        (0.5, "approve", "warming")}
    validator = schema_validator("verdicts")
    assert all(validator.is_valid(b) for b in bodies)
    sample = registry.get_sample_value
    assert sample("fraudstream_warming_decisions_total", {"decision": "approve"}) == 300
    assert sample("fraudstream_verdicts_total", {"decision": "review"}) == 0
    assert sample("fraudstream_verdicts_total", {"decision": "decline"}) == 0

    # The same group, labels inside the next 600 events and a warm-up of 100 labels: each
    # partition's first 100 verdicts are warming (scored before their own label is learned),
    # every later one is ready and decided by its score.
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps(e)) for e in events[300:900]])
    labelled = settings.model_copy(update={"max_events": 600, "warmup_labels": 100})
    registry = CollectorRegistry()
    assert run_scorer(labelled, registry).verdicts == 600
    seen = {p: len(v) for p, v in _by_partition(records).items()}
    records = _read_all(kafka_bootstrap, topics["output_topic"], 900)
    phase2 = {p: v[seen.get(p, 0):] for p, v in _by_partition(records).items()}
    assert sum(len(v) for v in phase2.values()) == 600
    warming = 0
    for verdicts in phase2.values():
        states = [v["model_state"] for v in verdicts]
        first_ready = states.index("ready")
        assert states == ["warming"] * first_ready + ["ready"] * (len(states) - first_ready)
        warming += first_ready
        if state == "partition":
            assert first_ready == 100
    if state == "shared":
        # One count: the warm-up ends at one event time for every partition (a read's epoch
        # lags its transaction by at most delta and an epoch), not after 100 labels each.
        at = {e["transaction_id"]: decode_transaction(orjson.dumps(e)).timestamp
              for e in events}
        last_warming = max(at[v["transaction_id"]] for vs in phase2.values() for v in vs
                           if v["model_state"] == "warming")
        first_ready_time = min(at[v["transaction_id"]] for vs in phase2.values() for v in vs
                               if v["model_state"] == "ready")
        assert 0 < warming and last_warming <= (first_ready_time + labelled.merchant_delta_s
                                                 + labelled.model_epoch_s)
    assert registry.get_sample_value("fraudstream_warming_decisions_total",
                                     {"decision": "approve"}) == warming

    # Restarted (same group): the label count comes back from the changelog.
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps(e)) for e in unlabelled[900:]])
    restarted = labelled.model_copy(update={"max_events": 50})
    registry = CollectorRegistry()
    assert run_scorer(restarted, registry).verdicts == 50
    seen = {p: len(v) for p, v in _by_partition(records).items()}
    records = _read_all(kafka_bootstrap, topics["output_topic"], 950)
    phase3 = [b for p, v in _by_partition(records).items() for b in v[seen.get(p, 0):]]
    assert len(phase3) == 50 and {b["model_state"] for b in phase3} == {"ready"}
    assert sum(registry.get_sample_value("fraudstream_warming_decisions_total",
                                         {"decision": d}) or 0
               for d in ("approve", "review", "decline")) == 0


def test_partitions_paused_for_running_ahead_are_read_again_after_resume(
    kafka_bootstrap: str, kafka_client: str, new_topic: Callable[..., str]
) -> None:
    """The intake pauses a partition that holds more than `buffered_records_per_partition`
    records and resumes it once drained. kafka-python 3.0 never fetched again a partition
    whose parsed records it had parked while another's were parked too (the adapter drops
    them on resume): `stream run` stalled for good at 179,102 of 200,000 events in make bench.
    A tiny threshold makes every partition pause and resume many times."""
    topics = scorer_topics(new_topic, partitions=4)
    events = list(generate(TrafficConfig(count=12_000, fraud_rate=0.02, seed=5, n_cards=400)))
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps(e)) for e in events])
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=len(events),
                         buffered_records_per_partition=40, max_poll_records=500,
                         idle_exit_s=15.0)
    result = run_scorer(settings, CollectorRegistry())
    assert (result.transactions, result.verdicts) == (12_000, 12_000)  # a stall ends it short


def test_stream_run_freezes_its_heap_without_leaking_on_librdkafka_only(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str]
) -> None:
    """serving/gc_policy.py: on librdkafka the scorer freezes its survivors every 0.1 s, and
    the full passes (here every 0.5 s) find nothing frozen that died: no leak. kafka-python
    keeps its futures in reference cycles, so it runs without a `HeapKeeper`."""
    _produce(kafka_bootstrap, topics["input_topic"],
             [(e["card_id"].encode(), orjson.dumps(e)) for e in _events(2_000)])
    args = [sys.executable, "-m", "stream", "--bootstrap-servers", kafka_bootstrap,
            "--kafka-client", kafka_client, "--log-level", "INFO", "run",
            "--group-id", f"heap-{uuid.uuid4().hex[:8]}", "--guarantee", "at-least-once",
            "--idle-exit", "4",
            *_topic_flags(topics)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env["FRAUDSTREAM_HEAP_FULL_COLLECT_S"] = "0.5"
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(_read_all(kafka_bootstrap, topics["output_topic"], 2_000)) == 2_000
    found = [int(line.split(" found ")[1].split()[0]) for line in proc.stderr.splitlines()
             if "heap: a full collection found" in line]
    if kafka_client == "kafka-python":
        assert found == [], found
        return
    assert len(found) >= 4, proc.stderr[-2000:]
    assert max(found[1:]) <= 20, found  # the first pass meets what the start left
