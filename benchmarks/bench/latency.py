"""End-to-end latency at a fixed offered rate: input record timestamp to verdict acknowledged.

Method. A scorer (`stream run`, no --max-events) is started on an empty, fresh input topic and
gets its partitions; then events are produced at a fixed rate with smooth pacing (one every
1/rate s, not bursts), each with its record timestamp set explicitly at send time (CreateTime,
wall clock, ms). The verdicts topic is created with `message.timestamp.type=LogAppendTime`, so
each verdict record carries the broker's clock at the moment it appended the verdict, which is
when an acks=all producer on a single broker is acknowledged. Per transaction_id, latency =
verdict LogAppendTime - input record timestamp. Producer, broker and scorer share this machine
and its clock, so there is no skew; both stamps have 1 ms resolution.

For exactly-once a verdict is acknowledged only when its transaction commits, after its
append, so that phase also runs a read_committed consumer thread (`LiveReader`) all along and
takes the wall clock at which each verdict first arrives ("visible" latency; it includes that
consumer's fetch round trip).

Events are sent for a warm-up first and not measured (connections, first fetch, cache-cold
Python): at least `warmup_s`, and on a local broker until its JIT compiler threads have gone
quiet, at most `warmup_max_s`. A broker compiles the code of each new kind of load it meets:
the latency phase's paced single-record produces and fetches, after the throughput phases'
big batches, cost its compiler threads 0.4 of a core for 10 to 15 s on this 2-core machine
(docs/benchmark.md, "The latency phase's warm-up"), and a p99 taken from 5 s on measured that.
Then `rate x seconds` events are sent and measured: p50 and p99 (nearest rank), plus p90,
p99.9, max, and where the machine's cores went in that window (scorer, broker, the broker's
compiler threads, the share busy) under "extra".
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from benchmarks.bench.harness import (
    LOG_APPEND_TIME,
    Topics,
    end_offsets_total,
    local_broker_pid,
    traffic,
)
from benchmarks.bench.scorer import (
    ScorerProcess,
    busy_share,
    compiler_seconds,
    cpu_seconds,
    machine_seconds,
    scorer_env,
    stream_command,
)
from stream.kafka.rdkafka import connection_config

_LOG_APPEND_TIME_TYPE = 1


@dataclass
class LatencyResult:
    offered_eps: float
    achieved_eps: float
    sent: int
    measured: int
    warmup_s: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    timestamp_type: str
    # Cores used in the measured window (None where unknown: no /proc, or no local broker).
    scorer_cores: float | None = None
    broker_cores: float | None = None
    broker_jit_cores: float | None = None
    machine_busy: float | None = None

    def extra(self) -> dict[str, Any]:
        return {k: ((round(v, 3) if v == v else None) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


class Pacer:
    """Releases event k at origin + k/rate: a smooth schedule, and no catch-up bursts (a send
    that falls behind by more than 50 ms restarts the schedule instead)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.origin = time.perf_counter()
        self.k = 0

    def wait(self) -> None:
        due = self.origin + self.k * self.interval
        ahead = due - time.perf_counter()
        if ahead > 0.0002:
            time.sleep(ahead)
        elif ahead < -0.05:
            self.origin, self.k = time.perf_counter(), 0
        self.k += 1


class WarmUp:
    """Whether the warm-up is over, `elapsed` seconds into the phase: after `minimum_s`, once
    the local broker's JIT compiler threads (`jit`: CPU seconds so far, None without a local
    broker) have used under `quiet` of a core over the last `window_s`; at `maximum_s` in any
    case. Read at most every `every_s` (a reading walks the broker's threads in /proc).

    >>> used = iter([0.0, 0.5, 1.0, 1.02, 1.04])  # 1 core for 1 s, then 0.04 of a core
    >>> warm = WarmUp(lambda: next(used), minimum_s=1.0, maximum_s=30.0, window_s=1.0)
    >>> [warm.over(t) for t in (0.0, 0.5, 1.0, 1.5, 2.0)]
    [False, False, False, False, True]
    >>> WarmUp(lambda: None, minimum_s=1.0, maximum_s=30.0).over(1.0)  # no broker of ours
    True
    """

    def __init__(self, jit: Callable[[], float | None], minimum_s: float, maximum_s: float,
                 quiet: float = 0.05, window_s: float = 2.0, every_s: float = 0.5) -> None:
        self.jit = jit
        self.minimum_s, self.maximum_s = minimum_s, max(minimum_s, maximum_s)
        self.quiet, self.window_s, self.every_s = quiet, window_s, every_s
        self._readings: deque[tuple[float, float]] = deque()

    def over(self, elapsed: float) -> bool:
        if elapsed >= self.maximum_s:
            return True
        readings = self._readings
        if not readings or elapsed - readings[-1][0] >= self.every_s:
            used = self.jit()
            if used is None:  # nothing to watch: the minimum alone
                return elapsed >= self.minimum_s
            readings.append((elapsed, used))
            while len(readings) > 1 and readings[1][0] <= elapsed - self.window_s:
                readings.popleft()
        if elapsed < self.minimum_s:
            return False
        (t0, used0), (t1, used1) = readings[0], readings[-1]
        return t1 - t0 >= self.window_s and (used1 - used0) / (t1 - t0) < self.quiet


class CoresUsed:
    """Where the cores went between `start()` and `stop()`: the scorer's, the broker's and its
    compiler threads' CPU over the window's length, and the machine's busy share."""

    def __init__(self, scorer_pid: int | None, broker_pid: int | None) -> None:
        self.scorer_pid, self.broker_pid = scorer_pid, broker_pid
        self._start: tuple[float, dict[str, float | None], tuple[float, float] | None] = (
            0.0, {}, None)
        self.result: dict[str, float | None] = {}

    def _read(self) -> dict[str, float | None]:
        scorer, broker = self.scorer_pid, self.broker_pid
        return {"scorer_cores": None if scorer is None else cpu_seconds(scorer),
                "broker_cores": None if broker is None else cpu_seconds(broker),
                "broker_jit_cores": None if broker is None else compiler_seconds(broker)}

    def start(self) -> None:
        self._start = (time.monotonic(), self._read(), machine_seconds())

    def stop(self) -> None:
        began, before, machine = self._start
        seconds = time.monotonic() - began
        after = self._read()
        self.result = {
            name: (round((after[name] - value) / seconds, 3)  # type: ignore[operator]
                   if value is not None and after[name] is not None and seconds > 0 else None)
            for name, value in before.items()}
        self.result["machine_busy"] = busy_share(machine, machine_seconds())


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def measure_latency(topics: Topics, rate: float, seconds: float, cards: int, seed: int,
                    warmup_s: float | None = None, run_args: tuple[str, ...] = (),
                    live: bool = False, warmup_max_s: float = 30.0,
                    ) -> tuple[LatencyResult, LatencyResult | None]:
    """Run the latency phase; return (appended, visible); the scorer is stopped in any case.

    `seconds` of events are measured after the warm-up (module docstring): at least
    `warmup_s` (default min(5, seconds / 4)), longer while a local broker's JIT compiles, at
    most `warmup_max_s`.

    `appended` uses each verdict's LogAppendTime: the acknowledgement of an acks=all send.
    `visible` (only with `live`) uses the wall clock at which a read_committed consumer,
    polling all along, first received each verdict: for exactly-once, where a verdict counts
    only once its transaction commits, this is the figure that matters (it adds the consumer's
    fetch round trip, and the reader's own CPU use on this small machine).
    """
    minimum = min(5.0, seconds / 4.0) if warmup_s is None else warmup_s
    input_topic = topics.fresh("latency-in")
    output = topics.fresh("latency-verdicts", config=LOG_APPEND_TIME)
    group = f"bench-latency-{topics.run_id}-{len(topics.created)}"
    command = stream_command(
        topics.bootstrap, "run", "--group-id", group, "--input-topic", input_topic,
        "--output-topic", output, "--labels-topic", topics.labels, "--dlq-topic", topics.dlq,
        "--idle-exit", "300",  # a safety net only: the benchmark stops it with SIGTERM
        *run_args,
    )
    count = max(1, int(rate * seconds))
    sent_ms: dict[str, int] = {}
    reader = LiveReader(topics.bootstrap, output) if live else None
    broker = local_broker_pid()
    warm = WarmUp(lambda: None if broker is None else compiler_seconds(broker), minimum,
                  warmup_max_s)
    warm_events = 0  # the first events, sent during the warm-up: not measured
    warmed = 0.0
    with ScorerProcess(command, scorer_env(topics.fresh_changelog())) as scorer:
        scorer.wait_assigned(120)
        cores = CoresUsed(scorer.pid, broker)
        # The load generator uses the scorer's C client too: with kafka-python its own
        # sender thread (in this busy process) delayed records by milliseconds after their
        # timestamp was taken, which counted against the scorer.
        producer = Producer({**connection_config(topics.settings(input_topic=input_topic)),
                             "acks": "all", "enable.idempotence": True, "linger.ms": 2,
                             "partitioner": "murmur2_random"})
        try:
            if reader is not None:
                reader.start()
            pacer = Pacer(rate)
            started = measured_from = time.perf_counter()
            measured = -1  # events sent since the warm-up ended; -1: warming up
            for event in traffic(count + int(rate * max(minimum, warmup_max_s)) + 1, cards,
                                 seed + 1):
                pacer.wait()
                ts = int(time.time() * 1000)
                if measured < 0 and warm.over(time.perf_counter() - started):
                    measured, warm_events = 0, len(sent_ms)
                    warmed = time.perf_counter() - started
                    cores.start()
                    measured_from = time.perf_counter()
                producer.produce(input_topic, key=event["card_id"].encode(),
                                 value=orjson.dumps(event), timestamp=ts)
                producer.poll(0)
                sent_ms[event["transaction_id"]] = ts
                if measured >= 0:
                    measured += 1
                    if measured == count:
                        break
            cores.stop()
            achieved = max(measured, 0) / max(1e-9, time.perf_counter() - measured_from)
            if producer.flush(60):
                raise RuntimeError("latency: the load generator could not deliver every event")
            _wait_for(topics.bootstrap, output, len(sent_ms), 60.0, scorer, reader)
        finally:
            producer.flush(10)
            if reader is not None:
                reader.stop()
    measured_ms = dict(list(sent_ms.items())[warm_events:])
    appended, ts_type = _read_latencies(topics.bootstrap, output, measured_ms)

    def result(latencies: list[float], method: str) -> LatencyResult:
        latencies.sort()
        return LatencyResult(
            offered_eps=rate, achieved_eps=round(achieved, 1), sent=len(sent_ms),
            measured=len(latencies), warmup_s=round(warmed, 1), p50=percentile(latencies, 50),
            p90=percentile(latencies, 90), p99=percentile(latencies, 99),
            p999=percentile(latencies, 99.9), max=latencies[-1] if latencies else float("nan"),
            timestamp_type=method, **cores.result,
        )

    visible = None
    if reader is not None:
        visible = result([float(reader.received[tx] - ts) for tx, ts in measured_ms.items()
                          if tx in reader.received],
                         "read_committed consumer receive time - input CreateTime")
    return result(appended, f"verdict {ts_type} - input CreateTime"), visible


class LiveReader:
    """A read_committed consumer thread stamping each verdict with the wall clock on arrival."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.received: dict[str, int] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verdict-reader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 isolation_level="read_committed", fetch_max_wait_ms=20,
                                 metrics_enabled=False)
        try:
            parts = [TopicPartition(self.topic, p)
                     for p in consumer.partitions_for_topic(self.topic) or ()]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            self._ready.set()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    now = int(time.time() * 1000)
                    for record in records:
                        tx_id = orjson.loads(record.value).get("transaction_id")
                        self.received.setdefault(tx_id, now)
        except BaseException as exc:  # noqa: BLE001 - reported by the waiter
            self.error = exc
        finally:
            self._ready.set()
            consumer.close()


def _wait_for(bootstrap: str, topic: str, expected: int, timeout_s: float,
              scorer: ScorerProcess, reader: LiveReader | None) -> None:
    """Until every verdict is written (and, with a live reader, received)."""
    deadline = time.monotonic() + timeout_s

    def missing() -> bool:
        if reader is not None:
            if reader.error is not None:
                raise RuntimeError(f"verdict reader failed: {reader.error!r}")
            if len(reader.received) < expected:
                return True
        return end_offsets_total(bootstrap, topic) < expected

    while missing():
        if scorer.returncode is not None:
            raise RuntimeError(f"scorer exited {scorer.returncode} during the latency phase:\n"
                               f"{scorer.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {expected} verdicts after {timeout_s:.0f}s")
        time.sleep(0.5)


def _read_latencies(bootstrap: str, topic: str,
                    sent_ms: dict[str, int]) -> tuple[list[float], str]:
    """Latency (ms) of the first verdict of every transaction in `sent_ms` (the measured
    ones: the warm-up's verdicts are passed over)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", metrics_enabled=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        latencies: list[float] = []
        seen: set[str] = set()
        types: set[int] = set()
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise RuntimeError("timed out reading the verdicts back")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    tx_id = orjson.loads(record.value).get("transaction_id")
                    sent = sent_ms.get(tx_id)
                    if sent is None or tx_id in seen:  # first verdict only, if repeated
                        continue
                    seen.add(tx_id)
                    types.add(record.timestamp_type)
                    latencies.append(float(record.timestamp - sent))
    finally:
        consumer.close()
    kind = "LogAppendTime" if types == {_LOG_APPEND_TIME_TYPE} else f"timestamp types {types}"
    return latencies, kind
