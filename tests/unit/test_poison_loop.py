"""One record must never stall the scorer (issue 13, item 1), on the in-memory Kafka doubles:
an output too large dead-letters its record and the loop moves on, a failure that repeats on
the same records is counted as such and ends the run, counters count each input once across
rewinds. The real broker, with both clients: tests/integration/test_poison_records.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import pipeline_config
from stream.config import Settings, load_settings
from stream.core.pipeline import Pipeline
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.delivery import AtLeastOnce
from stream.kafka.records import BEGINNING, Polled, Record, Source
from stream.kafka.testing import MemoryConsumer, MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop

TX, LABELS, VERDICTS, DLQ = "tx", "labels", "verdicts", "dlq"
LIMIT = 100_000  # max_message_bytes in these tests


class LogConsumer(MemoryConsumer):
    """A group consumer over an in-memory log: polls serve records from each partition's
    position, `seek` moves it (a rewind fetches records again), commits are remembered."""

    def __init__(self, log: dict[Source, list[Record]]) -> None:
        super().__init__()
        self.log = log
        self.position = dict.fromkeys(log, 0)
        self.assigned = list(log)
        self.committed: dict[Source, int] = {}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener
        listener.on_assigned(list(self.log))

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        records: list[Record] = []
        at_end: list[Source] = []
        for source, log in self.log.items():
            start = self.position[source]
            batch = log[start:start + max_records]
            records += batch
            self.position[source] = start + len(batch)
            if self.position[source] >= len(log):
                at_end.append(source)
        return Polled(records, at_end)

    def seek(self, source: Source, offset: int) -> None:
        super().seek(source, offset)
        self.position[source] = 0 if offset == BEGINNING else offset

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        super().commit(offsets, asynchronous)
        self.committed.update(offsets)


class Broker(MemoryProducer):
    """A producer whose broker acknowledges at once, and refuses records larger than `limit`:
    at `send` (as both clients do for their own limit), or in the delivery report when
    `refuse_late` (a topic whose max.message.bytes is below the client's limit)."""

    def __init__(self, written: list[tuple[str, bytes | None, bytes | None]],
                 limit: int = LIMIT, refuse_late: bool = False) -> None:
        super().__init__()
        self.written = written
        self.limit = limit
        self.refuse_late = refuse_late
        self._sizes: list[int] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Any = None,
             on_delivery: Any = None) -> None:
        size = len(key or b"") + len(value or b"")
        if size > self.limit and not self.refuse_late:
            raise ClientError("Broker: Message size too large", kind="too_large")
        super().send(topic, key, value, partition, headers, on_delivery)
        self._sizes.append(size)

    def poll(self, timeout_s: float) -> None:
        while self.unacked:
            size = self._sizes.pop(0)
            topic, key, value, _ = self.sent[len(self.sent) - len(self.unacked)]
            refused = size > self.limit
            self.ack(1, ClientError("Broker: Message size too large", kind="too_large")
                     if refused else None)
            if not refused:
                self.written.append((topic, key, value))

    def flush(self, timeout_s: float) -> int:
        self.poll(0)
        return 0


class Clients:
    def __init__(self, consumer: LogConsumer) -> None:
        self.consumer = consumer

    def committed(self, sources: list[Source], timeout_s: float) -> dict[Source, int]:
        return {s: o for s, o in self.consumer.committed.items() if s in sources}


def _event(i: int, **changes: Any) -> dict[str, Any]:
    event = {"transaction_id": f"t{i}", "card_id": f"c{i % 7}", "merchant_id": f"m{i % 3}",
             "amount": 10.0 + i, "timestamp": 1_700_000_000_000 + 1000 * i, "is_fraud": i % 5 == 0}
    event.update(changes)
    return event


def _log(events: list[dict[str, Any]]) -> dict[Source, list[Record]]:
    records = [Record(TX, 0, i, None, orjson.dumps(e)) for i, e in enumerate(events)]
    return {(TX, 0): records, (LABELS, 0): []}


def _settings(**extra: Any) -> Settings:
    values: dict[str, Any] = {
        "guarantee": "at-least-once", "changelog": False, "input_topic": TX,
        "labels_topic": LABELS, "output_topic": VERDICTS, "dlq_topic": DLQ,
        "max_message_bytes": LIMIT, "dead_letter_payload_bytes": 4096,
        "max_field_length": 100_000, "checkpoint_events": 5, "checkpoint_interval_ms": 10_000,
        "max_task_idle_ms": 0, "warmup_labels": 0, **PER_PARTITION}
    return load_settings(environ={}, **{**values, **extra})


def _run(events: list[dict[str, Any]], settings: Settings,
         producer: Callable[[list[Any]], Broker] = Broker, probe: Any = None
         ) -> tuple[ScorerLoop, CollectorRegistry, list[tuple[str, bytes | None, bytes | None]]]:
    consumer = LogConsumer(_log(events))
    written: list[tuple[str, bytes | None, bytes | None]] = []
    registry = CollectorRegistry()
    delivery = AtLeastOnce(lambda: producer(written), consumer, timeout_s=1.0)
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), "v1"), Metrics(registry),
                      Clients(consumer), consumer, delivery)  # type: ignore[arg-type]
    if probe is not None:
        loop.probe = probe
    timer = threading.Timer(30.0, loop.stop)  # a loop that never ends fails, not hangs
    timer.start()
    try:
        loop.run()
    finally:
        timer.cancel()
    return loop, registry, written


def _outputs(written: list[tuple[str, bytes | None, bytes | None]], topic: str
             ) -> list[dict[str, Any]]:
    return [orjson.loads(value) for t, _, value in written if t == topic and value]


HUGE_IDS = {"transaction_id": "T" * 60_000, "card_id": "C" * 60_000}


def test_a_verdict_too_large_dead_letters_its_record_and_the_rest_is_scored() -> None:
    events = [_event(i) for i in range(12)]
    events[6] = _event(6, **HUGE_IDS)
    loop, registry, written = _run(events, _settings(max_events=12))
    verdicts = [v["transaction_id"] for v in _outputs(written, VERDICTS)]
    assert sorted(verdicts) == sorted(f"t{i}" for i in range(12) if i != 6)
    assert len(verdicts) == len(set(verdicts))  # one each: the rewind's replays are dropped
    (letter,) = _outputs(written, DLQ)
    assert letter["reason"] == "output_too_large"
    assert letter["source"] == {"topic": TX, "partition": 0, "offset": 6}
    assert letter["payload_truncated"] and letter["payload_bytes"] > 120_000
    assert (loop.result.verdicts, loop.result.dead_letters) == (11, 1)
    sample = registry.get_sample_value
    assert sample("fraudstream_recoveries_total", {"reason": "output_too_large"}) == 1
    assert sample("fraudstream_dead_letters_total", {"reason": "output_too_large"}) == 1
    assert sample("fraudstream_checkpoint_failure_streak") == 0


def test_counters_count_each_input_once_across_rewinds() -> None:
    events = [_event(i) for i in range(12)]
    events[8] = _event(8, **HUGE_IDS)  # after a checkpoint: records 5-7 are done twice
    events[3] = _event(3, card_id=7)  # a dead letter of its own, done before the rewind
    loop, registry, _ = _run(events, _settings(max_events=12))
    sample = registry.get_sample_value
    assert sample("fraudstream_events_total", {"outcome": "scored"}) == 10
    assert sample("fraudstream_events_total", {"outcome": "dead_lettered"}) == 2
    assert sum(sample("fraudstream_verdicts_total", {"decision": d}) or 0
               for d in ("approve", "review", "decline")) == 10
    assert sample("fraudstream_dead_letters_total", {"reason": "invalid_type"}) == 1
    assert sample("fraudstream_labels_total", {"source": "event", "outcome": "received"}) == 10
    assert sample("fraudstream_model_updates_total") == 10
    assert sample("fraudstream_processing_seconds_count") == 10
    assert loop.result.transactions == 12


def test_a_size_refusal_in_a_delivery_report_is_found_by_checkpointing_one_record_at_a_time(
) -> None:
    """The broker refuses the record late (no local limit hit): the checkpoint that fails
    held five records; they are redone one checkpoint each, and the one that fails alone is
    dead-lettered."""
    events = [_event(i) for i in range(12)]
    events[7] = _event(7, **HUGE_IDS)
    settings = _settings(max_events=12, max_message_bytes=300_000)  # no local refusal

    def late(written: list[Any]) -> Broker:
        return Broker(written, limit=LIMIT, refuse_late=True)

    loop, registry, written = _run(events, settings, late)
    # At least once: the failed checkpoint's acknowledged verdicts are sent again.
    verdicts = {v["transaction_id"] for v in _outputs(written, VERDICTS)}
    assert verdicts == {f"t{i}" for i in range(12) if i != 7}
    assert [(d["reason"], d["source"]["offset"]) for d in _outputs(written, DLQ)] == [
        ("output_too_large", 7)]
    assert registry.get_sample_value("fraudstream_recoveries_total",
                                     {"reason": "output_too_large"}) == 2
    assert not loop.ledger.isolate_until  # back to normal checkpoints


def test_a_failure_repeating_on_the_same_records_is_not_a_recovery_and_ends_the_run() -> None:
    """Every checkpoint fails (say, a topic refuses every write). Each rewind works, which
    used to count as a recovery and restart the outage clock: it never ended. Now the
    failures are counted in a row and end the run after max_outage_s."""
    events = [_event(i) for i in range(12)]

    class Refusing(Broker):
        def poll(self, timeout_s: float) -> None:
            self.ack(None, ClientError("Broker: Topic authorization failed"))

    settings = _settings(max_events=12, max_outage_s=1.5)
    with pytest.raises(InfrastructureError, match="no checkpoint succeeded for more than 2s"):
        _run(events, settings, Refusing)


class _Timeouts(Broker):
    def poll(self, timeout_s: float) -> None:
        self.ack(None, ClientError("KafkaTimeoutError: Unable to bootstrap", kind="timed_out"))


class _Probe:
    """The broker probe, down for a while (it is not consulted while the broker answers)."""

    def __init__(self, down_s: float) -> None:
        self.down_s = down_s

    def down_for(self) -> float:
        return self.down_s


def test_giving_up_while_the_broker_is_gone_says_kafka_is_unreachable() -> None:
    """A CI run ended with "no checkpoint succeeded ...: Unable to bootstrap" when the
    broker had gone: kafka-python's failure while creating a consumer reached the
    give-up line before the loop's probe check did. Whichever gives up, the line says
    the broker is unreachable when the probe saw it so."""
    events = [_event(i) for i in range(12)]
    settings = _settings(max_events=12, max_outage_s=1.5)
    with pytest.raises(InfrastructureError, match=r"^Kafka unreachable for 9s \(.*no checkpoint "
                       r"succeeded for more than 2s .*Unable to bootstrap"):
        _run(events, settings, _Timeouts, probe=_Probe(9.0))
    with pytest.raises(InfrastructureError, match=r"^no checkpoint succeeded"):
        _run(events, settings, _Timeouts, probe=_Probe(0.0))


def test_failed_checkpoints_in_a_row_show_in_the_streak_gauge_and_reset_on_success() -> None:
    events = [_event(i) for i in range(12)]
    failures = [2]

    class Flaky(Broker):
        def poll(self, timeout_s: float) -> None:
            if failures[0] > 0 and self.unacked:
                failures[0] -= 1
                self.ack(None, ClientError("Broker: Not enough replicas"))
            super().poll(timeout_s)

    loop, registry, written = _run(events, _settings(max_events=12), Flaky)
    assert registry.get_sample_value("fraudstream_commits_total", {"result": "failed"}) == 2
    assert registry.get_sample_value("fraudstream_checkpoint_failure_streak") == 0
    assert loop.ledger.failures == 0 and loop.ledger.failing_since is None
    assert sorted(v["transaction_id"] for v in _outputs(written, VERDICTS)) == sorted(
        f"t{i}" for i in range(12))


def test_a_dead_letter_refused_for_its_size_ends_the_run_with_one_clear_error() -> None:
    """Dead letters are bounded, so a refused one means the dead-letter topic's limit is
    below max_message_bytes: the record is retried once as `output_too_large`, then the run
    ends naming the record and the setting, instead of rewinding for ever."""
    events = [_event(i) for i in range(6)]
    events[2] = _event(2, card_id=7)  # invalid_type: a dead letter

    class SmallDlq(Broker):
        def send(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None = None, headers: Any = None,
                 on_delivery: Any = None) -> None:
            if topic == DLQ:
                raise ClientError("Broker: Message size too large", kind="too_large")
            super().send(topic, key, value, partition, headers, on_delivery)

    with pytest.raises(InfrastructureError, match=r"tx\[0\] 2: its dead letter was refused "
                                                  r"too .*max.message.bytes"):
        _run(events, _settings(max_events=6), SmallDlq)
