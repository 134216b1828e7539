"""The three references the scorer is judged against, each over the same N pre-filled events.

- `passthrough`: the ceiling of the client library as the scorer uses it: the scorer's own
  confluent-kafka consumer and producer (stream/kafka/rdkafka.py, same settings, same
  max_poll_records and batching), its at-least-once delivery (stream/kafka/delivery.py: a
  checkpoint's offsets are committed once its sends are acknowledged; the last one waits),
  per record orjson decode + encode + produce, checkpoints on the scorer's
  `checkpoint_events` / `checkpoint_interval_ms`, and nothing else. The at-least-once scorer
  can only be slower than this.
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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from benchmarks.bench.harness import PARTITIONS, Prefilled, Topics
from stream.assembly import merchant_partitions, model_version, pipeline_config
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.kafka.clients import connect
from stream.kafka.delivery import AtLeastOnce
from stream.serving.gc_policy import HeapKeeper, tune_for_serving


class _Clock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records when partitions were first assigned: the start of the measured window."""

    def __init__(self) -> None:
        self.assigned_at: float | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.assigned_at is None and assigned:
            self.assigned_at = time.perf_counter()

    # stream.kafka.clients.RebalanceListener, for the scorer's own clients
    def on_assigned(self, sources: list[tuple[str, int]]) -> None:
        self.on_partitions_assigned(sources)

    def on_revoked(self, sources: list[tuple[str, int]]) -> None:
        pass

    def on_lost(self, sources: list[tuple[str, int]]) -> None:
        pass


def _deadline_check(deadline: float, done: int, wanted: int, what: str) -> None:
    if time.perf_counter() > deadline:
        raise RuntimeError(f"{what}: only {done} of {wanted} events after the time limit")


def passthrough(topics: Topics, events: int, group_id: str, timeout_s: float,
                kafka_client: str = "librdkafka") -> float:
    """Events/s of consume -> orjson decode -> orjson encode -> produce -> commit, with the
    scorer's own clients (either adapter) and at-least-once delivery (acknowledged before
    committed)."""
    settings = topics.settings(group_id=group_id, output=topics.fresh("passthrough"),
                               kafka_client=kafka_client)
    clients = connect(settings)
    consumer = clients.group_consumer()
    delivery = None
    try:
        delivery = AtLeastOnce(lambda: clients.producer(), consumer,
                               settings.request_timeout_ms / 1000.0)
        clock = _Clock()
        consumer.subscribe([settings.input_topic, settings.labels_topic], clock)
        output, most = settings.output_topic, settings.max_poll_records
        every, interval_s = settings.checkpoint_events, settings.checkpoint_interval_ms / 1000.0
        poll_s = settings.poll_timeout_ms / 1000.0
        done = since = 0
        last = time.perf_counter()
        deadline = last + timeout_s
        offsets: dict[tuple[str, int], int] = {}
        while done < events:
            _deadline_check(deadline, done, events, "passthrough")
            for record in consumer.poll(most, poll_s).records:
                if done >= events:
                    continue
                body = orjson.loads(record.value or b"{}")
                partition = record.partition
                delivery.send(output, record.key, orjson.dumps(body), partition=partition)
                offsets[record.source] = record.offset + 1
                done += 1
                since += 1
            now = time.perf_counter()
            if since and (since >= every or now - last >= interval_s or done >= events):
                final = done >= events
                delivery.commit(dict(offsets), wait=final)
                offsets.clear()
                since, last = 0, time.perf_counter()
        ended = time.perf_counter()
    finally:
        if delivery is not None:
            delivery.close()
        consumer.close()
    assert clock.assigned_at is not None
    return events / (ended - clock.assigned_at)


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

    The pipeline is configured from the same settings as `stream run` (defaults < env),
    with its merchant table over the topic's partitions when the merchant state is shared;
    the events come in event-time order, which keeps the table's reads exact. The garbage
    collector runs as in `stream run` (serving/gc_policy.py: the heap frozen, the serving
    thresholds, a `HeapKeeper` freezing survivors every 0.1 s), and as before afterwards.
    """
    settings = topics.settings()
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=merchant_partitions(settings, PARTITIONS))
    values, partitions = prefilled.values, prefilled.partitions
    with serving_heap() as heap:
        started = time.perf_counter()
        for i, (value, partition) in enumerate(zip(values, partitions, strict=True)):
            pipeline.score(decode_transaction(value), partition)
            if i % 100 == 0:
                heap.tick()
        elapsed = time.perf_counter() - started
    return len(values) / elapsed


@contextmanager
def serving_heap() -> Iterator[HeapKeeper]:
    """The garbage collector as `stream run` sets it, for this process while in the block.

    >>> from stream.serving.gc_policy import SERVING_THRESHOLDS
    >>> before = gc.get_threshold()
    >>> with serving_heap() as heap:
    ...     gc.get_threshold() == SERVING_THRESHOLDS, gc.get_freeze_count() > 0
    (True, True)
    >>> gc.get_threshold() == before, gc.get_freeze_count()
    (True, 0)
    """
    thresholds = gc.get_threshold()
    tune_for_serving()
    try:
        yield HeapKeeper(full_every_s=0.0)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.collect()
