"""The one-off and batch modes on the real broker: train then run --init-from, replay back-fill
to a separate topic without touching the live group, and live-versus-replay equivalence."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from stream.assembly import pipeline_config, state_key
from stream.batch.compare import compare_live
from stream.batch.train import train_file
from stream.cli.app import app, main
from stream.cli.batch import register
from stream.config import Settings, load_settings
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.devtools.files import write_jsonl
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.ranges import RangeSpec
from stream.serving.wiring import run_scorer
from stream.state.snapshot import load_snapshot

if not any(command.name == "train" for command in app.registered_commands):
    register(app)

PARTITIONS = 2


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return {
        "input_topic": new_topic(partitions=PARTITIONS, prefix="tx"),
        "labels_topic": new_topic(partitions=PARTITIONS, prefix="labels"),
        "output_topic": new_topic(partitions=PARTITIONS, prefix="verdicts"),
        "dlq_topic": new_topic(partitions=1, prefix="dlq"),
        "changelog_topic": new_topic(partitions=PARTITIONS, prefix="changelog"),
    }


def _settings(bootstrap: str, topics: dict[str, str], kafka_client: str,
              **extra: Any) -> Settings:
    return load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=kafka_client,
                         group_id=f"g-{uuid.uuid4().hex[:8]}", **topics, **extra)


def _events(count: int, seed: int) -> list[dict[str, Any]]:
    return list(generate(TrafficConfig(count=count, fraud_rate=0.03, seed=seed, n_cards=200,
                                       n_merchants=60)))


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for event in events:
        producer.send(topic, key=event["card_id"].encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()


def _read(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record on the topic, read to its end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             isolation_level="read_committed", enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(tps)
    records: list[Any] = []
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def _scores(bootstrap: str, topic: str) -> dict[str, float]:
    return {body["transaction_id"]: body["score"]
            for body in (orjson.loads(r.value) for r in _read(bootstrap, topic))}


def test_train_then_run_init_from_continues_from_the_trained_state(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str], tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    write_jsonl(_events(2000, seed=1), history)
    # State per partition: the offline check below scores one partition at a time (the
    # shared default is checked live against a replay below).
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=400,
                         merchant_state="partition", model_state="partition")
    config = pipeline_config(settings, state_key(settings))
    snapshot_path = tmp_path / "model.snapshot"
    train_file(history, snapshot_path, config, "trained-model")
    live_events = _events(400, seed=2)
    _produce(kafka_bootstrap, topics["input_topic"], live_events)

    result = run_scorer(settings.model_copy(update={"init_from": snapshot_path}),
                        CollectorRegistry())
    assert result.verdicts == 400
    records = _read(kafka_bootstrap, topics["output_topic"])
    live = {orjson.loads(r.value)["transaction_id"]: (r.partition, orjson.loads(r.value))
            for r in records}
    assert len(live) == 400
    # Offline, each partition continues from the same trained snapshot: same scores, bit for
    # bit; a model started from scratch gives other scores.
    snap = load_snapshot(snapshot_path, config.state_key)
    trained, fresh = Pipeline(config, init_from=snap), Pipeline(config)
    by_id = {e["transaction_id"]: e for e in live_events}
    same = differ = 0
    for partition in range(PARTITIONS):
        for event in (e for e in live_events if live[e["transaction_id"]][0] == partition):
            tx = decode_transaction(orjson.dumps(by_id[event["transaction_id"]]))
            expected = trained.score(tx, partition).score
            same += live[tx.transaction_id][1]["score"] == expected
            differ += fresh.score(tx, partition).score != expected
    assert same == 400 and differ > 300
    assert {body["model_version"] for _, body in live.values()} == {"trained-model"}


def test_replay_backfills_to_another_topic_without_touching_the_live_group(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str], new_topic: Callable[..., str],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    events = _events(600, seed=3)
    _produce(kafka_bootstrap, topics["input_topic"], events)
    backfill = new_topic(partitions=PARTITIONS, prefix="backfill")
    settings = _settings(kafka_bootstrap, topics, kafka_client)
    args = ["--bootstrap-servers", kafka_bootstrap, "--kafka-client", kafka_client,
            "replay", "--input-topic",
            topics["input_topic"], "--labels-topic", topics["labels_topic"],
            "--to-topic", backfill, "--no-progress", "--out", str(tmp_path / "warm.snapshot"),
            "--single-model"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert "replayed 600 transactions" in out and f"600 verdicts back-filled to {backfill}" in out
    scores = _scores(kafka_bootstrap, backfill)
    assert set(scores) == {e["transaction_id"] for e in events}
    assert load_snapshot(tmp_path / "warm.snapshot", state_key(settings)).events == 600

    # A range by offsets: only the tail of each partition.
    backfill_tail = new_topic(partitions=1, prefix="backfill")
    with pytest.raises(SystemExit) as exited:
        main(["--bootstrap-servers", kafka_bootstrap, "--kafka-client", kafka_client,
              "replay", "--input-topic",
              topics["input_topic"], "--no-labels", "--from-offset", "250", "--to-topic",
              backfill_tail, "--no-progress"])
    assert exited.value.code in (0, None)
    ends = KafkaConsumer(bootstrap_servers=kafka_bootstrap).end_offsets(
        [TopicPartition(topics["input_topic"], p) for p in range(PARTITIONS)])
    assert len(_scores(kafka_bootstrap, backfill_tail)) == sum(
        max(0, end - 250) for end in ends.values())

    # Neither replay joined or committed in the live group (nor any group).
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=settings.group_id,
                          enable_auto_commit=False)
    assert all(probe.committed(TopicPartition(topics["input_topic"], p)) is None
               for p in range(PARTITIONS))
    probe.close()

    # Back-filling into the live topics is refused as a user error.
    with pytest.raises(SystemExit) as exited:
        main(["--bootstrap-servers", kafka_bootstrap, "--kafka-client", kafka_client,
              "replay", "--input-topic",
              topics["input_topic"], "--output-topic", topics["output_topic"], "--to-topic",
              topics["output_topic"]])
    assert exited.value.code == 1
    assert "refusing to back-fill" in capsys.readouterr().err


def test_live_verdicts_match_a_replay_of_the_same_snapshot(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str], tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    write_jsonl(_events(1500, seed=4), history)
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=500)
    config = pipeline_config(settings, state_key(settings))
    snapshot_path = tmp_path / "model.snapshot"
    train_file(history, snapshot_path, config, "trained-model")
    _produce(kafka_bootstrap, topics["input_topic"], _events(500, seed=5))
    assert run_scorer(settings.model_copy(update={"init_from": snapshot_path}),
                      CollectorRegistry()).verdicts == 500

    comparison = compare_live(settings, config, load_snapshot(snapshot_path, config.state_key),
                              RangeSpec())
    assert comparison.events == 500 and comparison.unmatched == 0
    assert comparison.identical and comparison.agreement == 1.0
    assert comparison.a.metrics.roc_auc == comparison.b.metrics.roc_auc


def test_cli_compare_live_against_a_replay_from_scratch(
    kafka_bootstrap: str, kafka_client: str, topics: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A scorer that started from scratch, checked by `stream compare --live` with no
    snapshot: the replay starts from scratch too and must reproduce every live score."""
    settings = _settings(kafka_bootstrap, topics, kafka_client, max_events=300)
    _produce(kafka_bootstrap, topics["input_topic"], _events(300, seed=6))
    assert run_scorer(settings, CollectorRegistry()).verdicts == 300
    html = tmp_path / "live.html"
    with pytest.raises(SystemExit) as exited:
        main(["--bootstrap-servers", kafka_bootstrap, "--kafka-client", kafka_client,
              "compare", "--live",
              "--input-topic", topics["input_topic"], "--labels-topic", topics["labels_topic"],
              "--verdicts-topic", topics["output_topic"], "--html", str(html),
              "--fail-on-difference"])
    out = capsys.readouterr().out
    assert exited.value.code in (0, None), out
    assert "300 transactions scored by both: IDENTICAL" in out
    assert "A: live" in out and html.is_file()
