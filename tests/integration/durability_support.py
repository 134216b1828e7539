"""Shared helpers for the durability tests: topics, traffic, scorer processes, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from stream.assembly import state_key
from stream.config import load_settings
from stream.devtools.synthetic import TrafficConfig, generate
from stream.state.changelog import MODEL_KEY
from stream.state.keys import StateKey
from stream.state.snapshot import decode_snapshot

PARTITIONS = 4


@dataclass(frozen=True)
class Topics:
    input: str
    labels: str
    verdicts: str
    dlq: str
    changelog: str

    def flags(self) -> list[str]:
        return ["--input-topic", self.input, "--labels-topic", self.labels,
                "--output-topic", self.verdicts, "--dlq-topic", self.dlq,
                "--changelog-topic", self.changelog]

    def settings(self) -> dict[str, str]:
        return {"input_topic": self.input, "labels_topic": self.labels,
                "output_topic": self.verdicts, "dlq_topic": self.dlq,
                "changelog_topic": self.changelog}


def make_topics(new_topic: Callable[..., str]) -> Topics:
    return Topics(
        input=new_topic(partitions=PARTITIONS, prefix="tx"),
        labels=new_topic(partitions=PARTITIONS, prefix="labels"),
        verdicts=new_topic(partitions=PARTITIONS, prefix="verdicts"),
        dlq=new_topic(partitions=1, prefix="dlq"),
        changelog=new_topic(partitions=PARTITIONS, prefix="changelog"),
    )


def produce_traffic(bootstrap: str, topic: str, count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Labelled synthetic events keyed by card; returns them in produce order."""
    events = list(generate(TrafficConfig(count=count, fraud_rate=0.02, seed=seed, n_cards=3000)))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for event in events:
        producer.send(topic, key=event["card_id"].encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()
    return events


class TrafficStream:
    """Labelled synthetic events produced in a background thread at a steady rate.

    Why not pre-fill: the scorer drains ~10,000 events/s, so a pre-filled topic is done
    before a second instance has even joined the group, and a kill or an outage "mid-stream"
    would hit an idle scorer. Traffic that keeps arriving keeps every instance busy."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float,
                 seed: int = 11) -> None:
        self.events = list(generate(TrafficConfig(count=count, fraud_rate=0.02, seed=seed,
                                                  n_cards=3000)))
        self._args = (bootstrap, topic, rate)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        bootstrap, topic, rate = self._args
        try:
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
            started = time.monotonic()
            for i, event in enumerate(self.events):
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.send(topic, key=event["card_id"].encode(), value=orjson.dumps(event))
            producer.flush()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced by join()
            self.error = exc

    def join(self, timeout_s: float = 180.0) -> list[dict[str, Any]]:
        """Wait until every event is acknowledged; returns them in produce order."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the traffic producer did not finish"
        assert self.error is None, self.error
        return self.events


def partition_counts(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    return {tp.partition: ends[tp] for tp in tps}


def read_committed(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0,
                   settle_s: float = 2.0, ids: set[str] | None = None) -> list[Any]:
    """Every committed record, waiting for `expected`, then `settle_s` more for duplicates.

    `ids`: wait instead for a verdict of each of these transactions. At-least-once after a
    SIGKILL writes some verdicts twice, and the duplicates count toward `expected`: a read
    that stopped at 12,000 records stopped before the last 2,404 transactions' verdicts,
    which the surviving instance was still writing."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False,
                             group_id=None)
    records: list[Any] = []
    waiting = set(ids) if ids is not None else None
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
            if waiting:
                waiting.difference_update(orjson.loads(r.value)["transaction_id"] for r in batch)
        if (len(records) >= expected) if waiting is None else not waiting:
            settle_until = settle_until or time.monotonic() + settle_s
            if time.monotonic() > settle_until:
                break
    consumer.close()
    return records


def group_positions(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """Per partition of `topic`: the group's committed offset and the end offset (to say,
    when verdicts are missing, whether their input was committed without them)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(parts)
        return {tp.partition: (consumer.committed(tp), ends[tp]) for tp in parts}
    finally:
        consumer.close()


def verdict_ids(records: list[Any]) -> Counter[str]:
    return Counter(orjson.loads(r.value)["transaction_id"] for r in records)


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every committed record of a topic nobody writes any more, up to each partition's last
    stable offset. `read_committed` with a small `expected` stops `settle_s` after the first
    record: on a loaded machine it returned part of a changelog, and the last model snapshot
    of two partitions was an older one (CI at 9fb5edf)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", enable_auto_commit=False,
                             group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s} s"
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def latest_model_snapshots(bootstrap: str, changelog: str) -> dict[int, Any]:
    """The last committed model snapshot of each changelog partition."""
    snapshots: dict[int, Any] = {}
    for record in read_to_end(bootstrap, changelog):
        if record.key == MODEL_KEY and record.value is not None:
            snapshots[record.partition] = decode_snapshot(record.value, scorer_key())
    return snapshots


def scorer_key() -> StateKey:
    """The key the scorers of these tests sign with: none is configured (their environment
    has no FRAUDSTREAM_* variable), so it is this user's development key."""
    return state_key(load_settings(environ={}))


STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> None:
    """Called after every test: a failed assertion must not leave a scorer running."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def scorer_process(bootstrap: str, topics: Topics, group: str, *extra: str,
                   metrics_port: int | None = None,
                   kafka_client: str = "librdkafka") -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "stream", "--bootstrap-servers", bootstrap,
            "--kafka-client", kafka_client, "run",
            "--group-id", group, "--session-timeout-ms", "6000",
            "--checkpoint-interval-ms", "50", *topics.flags(), *extra]
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    return logged_process(args, env)


_LOGS: dict[int, IO[bytes]] = {}


def logged_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A scorer process whose stderr goes to a file, read by `stop`/`finish`/`stderr_of`.

    Not to a pipe: a pipe that nobody reads while the process runs holds 64 KiB, and the
    scorer's next log line then blocks it (a stalled scorer, seen as lost verdicts under
    load, when rebalances and retries log more)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log, env=env)
    _LOGS[proc.pid] = log
    STARTED.append(proc)
    return proc


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """What the process has written to stderr so far."""
    log = _LOGS[proc.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> tuple[int, str]:
    """Wait for the process to exit by itself; its exit code and stderr."""
    proc.wait(timeout_s)
    return proc.returncode, stderr_of(proc)


def scraped(port: int, name: str, labels: str = "") -> float | None:
    """One sample's value from a scorer's /metrics, None while it is not up."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr (SIGKILL if it does not stop in time)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, stderr_of(proc)


def new_group() -> str:
    return f"dur-{uuid.uuid4().hex[:8]}"


def scorer_thread(settings: Any, registry: Any) -> tuple[threading.Thread, dict[str, object]]:
    """`run_scorer` in a started thread; its result ("result") or the exception it raised
    ("error") lands in the returned dict, for the test's assertions."""
    from stream.serving.wiring import run_scorer

    outcome: dict[str, object] = {}

    def _run() -> None:
        try:
            outcome["result"] = run_scorer(settings, registry)
        except Exception as exc:  # surfaced by the caller's assertion
            outcome["error"] = exc

    thread = threading.Thread(target=_run)
    thread.start()
    return thread, outcome


def fresh_topics(bootstrap: str, partitions: int) -> Topics:
    """The scorer's five topics, new, with `partitions` each: for tests that start (and
    stop) a broker of their own, which the session's `new_topic` fixture does not serve."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [f"{role}-{new_group()}" for role in ("tx", "labels", "verdicts", "dlq", "cl")]
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()
    return Topics(*names)


def finished(thread: threading.Thread, outcome: dict[str, object]) -> Any:
    """The `RunResult` of a `scorer_thread` that must end within two minutes without an
    error (after a broker came back, in the outage tests)."""
    from stream.serving.ledger import RunResult

    thread.join(timeout=120)
    assert not thread.is_alive(), "the scorer did not finish after the broker came back"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert isinstance(result, RunResult)
    return result
