"""The benchmark's broker, topics and pre-filled input.

Why pre-fill: throughput is measured by draining a topic that already holds every event, so
the producer's speed never limits (or flatters) the consumer being timed, and every contender
reads exactly the same records, with its own fresh consumer group.

Topics get a per-run uuid suffix: on a shared broker (`KAFKA_BOOTSTRAP_SERVERS`, or the test
session's) they never collide with anything else, and they are deleted at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.config import Settings, load_settings
from stream.contracts.partitioning import partition_for
from stream.devtools.broker import BrokerError, LocalBroker, find_free_port
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.classify import ClientError
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting

log = logging.getLogger("benchmarks.bench")

PARTITIONS = 4
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
_TOPIC_ALREADY_EXISTS = 36
# The broker `bench_broker` is running, if it started one: its CPU is read around each run.
_RUNNING: list[LocalBroker] = []


def quiet_broker(max_wait_s: float = 120.0, below: float = 0.15,
                 window_s: float = 3.0) -> float | None:
    """Wait until the local broker uses less than `below` of a core over `window_s` (its log
    cleaner compacting the throughput phases' changelogs, flushes and JIT work done), at most
    `max_wait_s`; return the seconds waited (None without a local broker). A latency measured
    while the broker is busy with the previous phase's leftovers measures those."""
    from benchmarks.bench.scorer import cpu_seconds

    pid = local_broker_pid()
    if pid is None:
        return None
    started = time.monotonic()
    last = cpu_seconds(pid)
    while last is not None and time.monotonic() - started < max_wait_s:
        time.sleep(window_s)
        now = cpu_seconds(pid)
        if now is None or (now - last) / window_s < below:
            break
        last = now
    return time.monotonic() - started


def local_broker_pid() -> int | None:
    """The pid of the broker `bench_broker` started (None with KAFKA_BOOTSTRAP_SERVERS): the
    broker shares the cores with the scorer, so its CPU per event is part of the cost."""
    return _RUNNING[-1].pid() if _RUNNING else None


@contextmanager
def bench_broker() -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, where): `KAFKA_BOOTSTRAP_SERVERS` if set, else a local broker on a
    free port with a temporary data dir that is stopped and removed afterwards, even on error."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env, "KAFKA_BOOTSTRAP_SERVERS"
        return
    brokers: list[tuple[LocalBroker, Path]] = []
    try:
        # Two attempts on fresh ports and dirs: a start-up flake (a port taken between the
        # probe and the bind, a random cluster id the storage tool misreads) must not cost a
        # whole benchmark run.
        for attempt in (1, 2):
            data_dir = Path(tempfile.mkdtemp(prefix="fraud-stream-bench-"))
            broker = LocalBroker(port=find_free_port(), data_dir=data_dir)
            brokers.append((broker, data_dir))
            log.info("starting a local broker (data dir %s)", data_dir)
            try:
                bootstrap = broker.start(timeout_s=120)
                break
            except BrokerError as exc:
                if attempt == 2:
                    raise
                log.warning("local broker failed to start, retrying once: %s",
                            str(exc).splitlines()[0])
                with suppress(Exception):
                    broker.stop()
        _RUNNING.append(broker)
        yield bootstrap, "local broker started by the benchmark"
    finally:
        _RUNNING.clear()
        for broker, data_dir in brokers:
            with suppress(Exception):
                broker.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Topics:
    """The topic names of one benchmark run, and the admin work around them."""

    bootstrap: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    @property
    def input(self) -> str:
        return f"bench-transactions-{self.run_id}"

    @property
    def labels(self) -> str:
        return f"bench-labels-{self.run_id}"

    @property
    def dlq(self) -> str:
        return f"bench-dlq-{self.run_id}"

    @property
    def changelog(self) -> str:
        return f"bench-changelog-{self.run_id}"

    def fresh(self, role: str, partitions: int = PARTITIONS,
              config: dict[str, str] | None = None) -> str:
        """Create a new uniquely named topic (an output or a latency input) and return it."""
        name = f"bench-{role}-{self.run_id}-{uuid.uuid4().hex[:6]}"
        self.create({name: (partitions, config or {})})
        return name

    def fresh_changelog(self) -> str:
        """A compacted changelog for one scorer run: a scorer restores its state from its
        changelog on assignment, so runs that shared one would start from each other's state
        (and pay for restoring it)."""
        return self.fresh("changelog", config={"cleanup.policy": "compact"})

    def create_base(self) -> None:
        """Input, labels and changelog co-partitioned (4), dead letters on one partition."""
        self.create({
            self.input: (PARTITIONS, {}),
            self.labels: (PARTITIONS, {}),
            self.dlq: (1, {}),
            self.changelog: (PARTITIONS, {"cleanup.policy": "compact"}),
        })

    def create(self, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
        admin = connect(self.settings()).admin()
        try:
            result = admin.create_topics({name: (parts, 1, config)
                                          for name, (parts, config) in topics.items()})
            errors = [f"{name}: {error}" for name, error in result.items()
                      if error not in (None, "already exists")]
            if errors:
                raise RuntimeError("could not create bench topics: " + "; ".join(errors))
            self.created.extend(topics)
        finally:
            admin.close()

    def delete_all(self) -> None:
        """Best effort: a shared broker should not keep the benchmark's topics."""
        if not self.created:
            return
        with suppress(Exception):
            admin = connect(self.settings()).admin()
            try:
                admin.delete_topics(self.created)
            finally:
                admin.close()
        self.created.clear()

    def settings(self, group_id: str | None = None, output: str | None = None,
                 input_topic: str | None = None, **extra: Any) -> Settings:
        """The scorer's settings for these topics, read the way `stream run` reads them (the
        environment applies), so in-process contenders use the very same client options."""
        return load_settings(
            bootstrap_servers=self.bootstrap, group_id=group_id,
            input_topic=input_topic or self.input, labels_topic=self.labels,
            dlq_topic=self.dlq, output_topic=output, changelog_topic=self.changelog, **extra,
        )


@dataclass
class Prefilled:
    """What went into the input topic: the exact values and partitions, for model_only."""

    values: list[bytes]
    partitions: list[int]
    seconds: float
    fraud: int

    @property
    def count(self) -> int:
        return len(self.values)


def traffic(count: int, cards: int, seed: int, fraud_rate: float = 0.01,
            per_card_day: float = 3.0) -> Iterator[dict[str, Any]]:
    """Synthetic events with their labels inside (`is_fraud`), as `stream produce` makes them;
    `per_card_day` transactions a card makes a day set how dense the stream is in event time
    (cards x per_card_day / 86,400 a second: 0.35 with the defaults)."""
    return generate(TrafficConfig(count=count, fraud_rate=fraud_rate, seed=seed, n_cards=cards,
                                  mean_tx_per_card_per_day=per_card_day))


def prefill(topics: Topics, count: int, cards: int, seed: int, topic: str | None = None,
            partitions_of_topic: int = PARTITIONS) -> Prefilled:
    """Produce `count` events keyed by card_id into the input topic (or `topic`) and wait
    until all are acknowledged; each lands in the partition Kafka's murmur2 partitioner gives
    its key."""
    producer = connect(topics.settings()).producer(linger_ms=20.0)
    values: list[bytes] = []
    partitions: list[int] = []
    failed: list[ClientError] = []
    fraud = 0
    started = time.perf_counter()

    def delivered(error: ClientError | None) -> None:
        if error is not None:
            failed.append(error)

    try:
        for event in traffic(count, cards, seed):
            value = orjson.dumps(event)
            key = event["card_id"].encode()
            values.append(value)
            partitions.append(partition_for(key, partitions_of_topic))
            fraud += bool(event.get("is_fraud"))
            send_waiting(producer, topic or topics.input, key, value, on_delivery=delivered)
        left = producer.flush(120.0)
    finally:
        producer.close(10.0)
    if left or failed:
        raise RuntimeError(f"pre-fill: {left} unacknowledged, {len(failed)} failed")
    return Prefilled(values, partitions, time.perf_counter() - started, fraud)


def end_offsets_total(bootstrap: str, topic: str) -> int:
    """Sum of a topic's end offsets: its record count when nothing transactional wrote it."""
    reader = connect(load_settings(environ={}, bootstrap_servers=bootstrap)).reader()
    try:
        return sum(reader.watermarks((topic, p), 30.0)[1] for p in reader.partitions(topic))
    finally:
        reader.close()
