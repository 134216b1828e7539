"""The three references the scorer is judged against, each over the same N pre-filled events.

- `passthrough`: the ceiling of the client library as the scorer uses it: the scorer's own
  consumer and producer (stream/data/kafka_io.py, same settings, same max_poll_records), the
  same loop shape (poll, per record decode + encode + send; at each checkpoint flush, check
  every send and commit the offsets; checkpoints follow the scorer's `checkpoint_events` /
  `checkpoint_interval_ms` when the settings have them, else one per polled batch), and
  nothing else. The at-least-once scorer can only be slower than this.
- `naive`: the loop most River-on-Kafka tutorials show, with default client settings:
  `for msg in consumer`, `json.loads`, a StandardScaler | LogisticRegression on the raw numeric
  fields, `producer.send(json.dumps(...).encode())`. What "just wire it up" gives.
- `model_only`: decode + Pipeline.score in process, no Kafka: the core's own ceiling.

The Kafka contenders start their clock when the group hands them partitions (as the scorer's
window starts at its `partitions assigned` log line) and stop it once the last output is
acknowledged (passthrough: after the last commit; naive: after `producer.flush()`).
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata

from stream.bench.harness import Prefilled, Topics
from stream.data.codec import decode_transaction
from stream.data.kafka_io import make_consumer, make_producer
from stream.pipeline import Pipeline
from stream.service import model_version, pipeline_config


class _Clock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records when partitions were first assigned: the start of the measured window."""

    def __init__(self) -> None:
        self.assigned_at: float | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.assigned_at is None and assigned:
            self.assigned_at = time.perf_counter()


def _deadline_check(deadline: float, done: int, wanted: int, what: str) -> None:
    if time.perf_counter() > deadline:
        raise RuntimeError(f"{what}: only {done} of {wanted} events after the time limit")


def passthrough(topics: Topics, events: int, group_id: str, timeout_s: float) -> float:
    """Events/s of consume -> orjson decode -> orjson encode -> produce -> flush + commit."""
    settings = topics.settings(group_id=group_id, output=topics.fresh("passthrough"))
    consumer = make_consumer(settings)
    producer = None
    try:
        producer = make_producer(settings)
        clock = _Clock()
        consumer.subscribe([settings.input_topic, settings.labels_topic], listener=clock)
        output, flush_s = settings.output_topic, settings.request_timeout_ms / 1000.0
        every = int(getattr(settings, "checkpoint_events", 1))
        interval_s = float(getattr(settings, "checkpoint_interval_ms", 0.0)) / 1000.0
        done = since = 0
        last = time.perf_counter()
        deadline = last + timeout_s
        offsets: dict[Any, OffsetAndMetadata] = {}
        futures: list[Any] = []
        while done < events:
            _deadline_check(deadline, done, events, "passthrough")
            batch = consumer.poll(timeout_ms=settings.poll_timeout_ms)
            for tp, records in batch.items():
                for record in records:
                    if done >= events:
                        break
                    body = orjson.loads(record.value)
                    futures.append(producer.send(output, key=record.key,
                                                 value=orjson.dumps(body)))
                    offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                    done += 1
                    since += 1
            now = time.perf_counter()
            if since and (since >= every or now - last >= interval_s or done >= events):
                _checkpoint(producer, consumer, futures, offsets, flush_s)
                since, last = 0, time.perf_counter()
        ended = time.perf_counter()
    finally:
        if producer is not None:
            producer.close(timeout=10)
        consumer.close(autocommit=False)
    assert clock.assigned_at is not None
    return events / (ended - clock.assigned_at)


def _checkpoint(producer: Any, consumer: Any, futures: list[Any],
                offsets: dict[Any, OffsetAndMetadata], flush_s: float) -> None:
    """Flush, make sure every send succeeded, then commit: the at-least-once checkpoint."""
    producer.flush(timeout=flush_s)
    failed = sum(1 for f in futures if f.failed())
    if failed:
        raise RuntimeError(f"passthrough: {failed} sends failed")
    consumer.commit(dict(offsets))
    futures.clear()
    offsets.clear()


def naive(topics: Topics, events: int, group_id: str, timeout_s: float) -> float:
    """Events/s of the tutorial loop, with kafka-python's default client settings.

    Deviations from the defaults, each needed to measure at all: `auto_offset_reset='earliest'`
    (as tutorials write it; the default 'latest' would read nothing from a pre-filled topic),
    `consumer_timeout_ms` as a safety valve, and `subscribe(..., listener=)` instead of the
    topic in the constructor, to start the clock at assignment like the other contenders.
    """
    from river import linear_model, preprocessing

    output = topics.fresh("naive")
    consumer = KafkaConsumer(bootstrap_servers=topics.bootstrap, group_id=group_id,
                             auto_offset_reset="earliest", consumer_timeout_ms=60_000)
    producer = None
    try:
        producer = KafkaProducer(bootstrap_servers=topics.bootstrap)
        clock = _Clock()
        consumer.subscribe([topics.input], listener=clock)
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        done = 0
        deadline = time.perf_counter() + timeout_s
        for msg in consumer:
            event = json.loads(msg.value)
            x = {k: v for k, v in event.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
            score = model.predict_proba_one(x).get(True, 0.0)
            if event.get("is_fraud") is not None:
                model.learn_one(x, bool(event["is_fraud"]))
            verdict = {"transaction_id": event["transaction_id"], "score": score,
                       "decision": "decline" if score > 0.5 else "approve"}
            producer.send(output, json.dumps(verdict).encode())
            done += 1
            if done >= events:
                break
            if done % 1000 == 0:
                _deadline_check(deadline, done, events, "naive")
        producer.flush()
        ended = time.perf_counter()
    finally:
        if producer is not None:
            producer.close(timeout=10)
        consumer.close()
    if done < events:
        raise RuntimeError(f"naive: the consumer ran dry after {done} of {events} events")
    assert clock.assigned_at is not None
    return events / (ended - clock.assigned_at)


def model_only(prefilled: Prefilled, topics: Topics) -> float:
    """Events/s of decode + Pipeline.score over the same events and partitions, no Kafka.

    The pipeline is configured from the same settings as `stream run` (defaults < env).
    """
    settings = topics.settings()
    pipeline = Pipeline(pipeline_config(settings), model_version(settings))
    values, partitions = prefilled.values, prefilled.partitions
    gc.collect()
    started = time.perf_counter()
    for value, partition in zip(values, partitions, strict=True):
        pipeline.score(decode_transaction(value), partition)
    return len(values) / (time.perf_counter() - started)
