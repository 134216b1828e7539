"""Scale-out: one and two `stream run` instances in one consumer group over 8 partitions.

Why the input is produced only once the group is settled: a pre-filled topic would be
drained by whichever instance joined first, alone, until the second one's join rebalanced
the group, so "two instances" would partly measure one. Here every instance starts on empty
topics (input, labels, verdicts and changelog with 8 partitions each, co-partitioned as the
scorer requires); once each has logged its final share of the input partitions (8 for one
instance, 4 and 4 for two), the benchmark produces the events, keyed by card, as fast as its
producer goes, and times from the first event sent until the verdicts topic holds one verdict
per event (its end offsets; at-least-once verdicts are appended at once). Both
configurations are timed the same way, on the same machine, so their ratio is the scale-out.
On the 2-core machine the broker, the producer and both scorers share the cores.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.bench.harness import Topics, end_offsets_total, local_broker_pid, traffic
from benchmarks.bench.scorer import (
    ScorerProcess,
    busy_share,
    count_inputs,
    cpu_seconds,
    machine_seconds,
    scorer_env,
    stream_command,
)
from stream.kafka.classify import ClientError
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting

log = logging.getLogger("benchmarks.bench")

SCALE_PARTITIONS = 8


@dataclass
class ScaleRun:
    """One configuration: how many instances, and how fast they answered together."""

    instances: int
    eps: float
    window_s: float
    produce_s: float  # how long the producer took to send every event (inside the window)
    cpu_seconds_per_million: float | None  # every scorer process's CPU in the window, summed
    # Waits for another instance's merchant events given up, all instances (their exit
    # lines): after one, merchant reads were served stale and the scores are not those of
    # one pipeline. Non-zero means the figure was bought with determinism.
    merchant_waits_given_up: int = 0
    # The local broker's CPU in the window (None with KAFKA_BOOTSTRAP_SERVERS), and the share
    # of the machine's cores busy in it (everything on it: broker, producer, scorers): near 1
    # means no core was left for another instance to use.
    broker_cpu_seconds_per_million: float | None = None
    machine_busy: float | None = None


def scale_topics(topics: Topics) -> dict[str, str]:
    """Fresh topics with SCALE_PARTITIONS partitions each (the changelog compacted)."""
    n = SCALE_PARTITIONS
    return {"input": topics.fresh("scale-transactions", n),
            "labels": topics.fresh("scale-labels", n),
            "output": topics.fresh("scale-verdicts", n),
            "changelog": topics.fresh("scale-changelog", n, {"cleanup.policy": "compact"})}


def settled(scorers: list[ScorerProcess], input_topic: str, total: int) -> bool:
    """Every instance holds an equal share of the input partitions, and they cover all."""
    shares = [count_inputs(s.assignment, input_topic) for s in scorers]
    return sum(shares) == total and min(shares) == total // len(scorers)


def run_instances(topics: Topics, events: list[tuple[bytes, bytes]], instances: int,
                  timeout_s: float, settle_timeout_s: float = 120.0) -> ScaleRun:
    """Start `instances` scorers in one group, wait until they share the partitions, produce
    the events and time until every verdict is in; the scorers are always stopped."""
    names = scale_topics(topics)
    group = f"bench-scale-{topics.run_id}-{uuid.uuid4().hex[:6]}"
    command = stream_command(
        topics.bootstrap, "run", "--group-id", group, "--input-topic", names["input"],
        "--output-topic", names["output"], "--labels-topic", names["labels"],
        "--dlq-topic", topics.dlq, "--guarantee", "at-least-once")
    env = scorer_env(names["changelog"])
    with ExitStack() as stack:
        scorers = [stack.enter_context(ScorerProcess(command, env, local_broker_pid()))
                   for _ in range(instances)]
        _wait_settled(scorers, names["input"], settle_timeout_s)
        broker = local_broker_pid()
        cpu_before = [cpu_seconds(s.pid) if s.pid is not None else None for s in scorers]
        broker_before = cpu_seconds(broker) if broker is not None else None
        machine_before = machine_seconds()
        started = time.monotonic()
        produce_s = _produce(topics, names["input"], events)
        deadline = started + timeout_s
        while end_offsets_total(topics.bootstrap, names["output"]) < len(events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{instances} scorer(s) did not answer {len(events)} "
                                   f"events within {timeout_s:.0f}s:\n{scorers[0].tail()}")
            for s in scorers:
                if s.returncode is not None:
                    raise RuntimeError(f"a scorer exited ({s.returncode}):\n{s.tail()}")
            time.sleep(0.1)
        window = time.monotonic() - started
        cpu_after = [cpu_seconds(s.pid) if s.pid is not None else None for s in scorers]
        broker_after = cpu_seconds(broker) if broker is not None else None
        busy = busy_share(machine_before, machine_seconds())
    spent = _spent(cpu_before, cpu_after)
    cpu = None if spent is None else spent / len(events) * 1e6
    broker_spent = _spent([broker_before], [broker_after])
    return ScaleRun(instances, len(events) / window, window, produce_s, cpu,
                    sum(s.merchant_waits for s in scorers),
                    broker_cpu_seconds_per_million=(
                        None if broker_spent is None else broker_spent / len(events) * 1e6),
                    machine_busy=busy)


def _spent(before: list[float | None], after: list[float | None]) -> float | None:
    """CPU seconds spent by all processes between two readings; None if any is missing.

    >>> _spent([1.0, 2.0], [3.5, 2.5])
    3.0
    >>> _spent([1.0, None], [3.5, 2.5]) is None
    True
    """
    total = 0.0
    for b, a in zip(before, after, strict=True):
        if a is None or b is None:
            return None
        total += a - b
    return total


def _wait_settled(scorers: list[ScorerProcess], input_topic: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not settled(scorers, input_topic, SCALE_PARTITIONS):
        for s in scorers:
            if s.returncode is not None:
                raise RuntimeError(f"a scorer exited before the group settled:\n{s.tail()}")
        if time.monotonic() > deadline:
            shares = [s.assignment for s in scorers]
            raise RuntimeError(f"the group did not settle within {timeout_s:.0f}s: {shares}")
        time.sleep(0.2)
    time.sleep(1.0)  # the restores of the last assignment (empty changelog) end at once


def _produce(topics: Topics, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    started = time.monotonic()
    producer = connect(topics.settings()).producer(linger_ms=20.0)
    failed: list[ClientError] = []

    def delivered(error: ClientError | None) -> None:
        if error is not None:
            failed.append(error)

    try:
        for key, value in events:
            send_waiting(producer, topic, key, value, on_delivery=delivered)
        left = producer.flush(120.0)
    finally:
        producer.close(10.0)
    if left or failed:
        raise RuntimeError(f"scale-out input: {left} unacknowledged, {len(failed)} failed")
    return time.monotonic() - started


def scale_out(topics: Topics, count: int, cards: int, seed: int,
              timeout_s: float, per_card_day: float = 3.0) -> dict[str, Any]:
    """One instance, then two, on the same events; eps of each and their ratio.

    How dense the events are in event time matters here, not elsewhere: instances catching
    up together move in step, `merchant_delta_s - merchant_lateness_s` of event time per
    exchange of merchant feed records, so the fewer records that holds, the more exchanges
    (each a round trip through the broker) the backlog takes."""
    events = [(e["card_id"].encode(), orjson.dumps(e))
              for e in traffic(count, cards, seed, per_card_day=per_card_day)]
    runs = {}
    for instances in (1, 2):
        log.info("scale-out: %d instance(s), %d partitions, %d events", instances,
                 SCALE_PARTITIONS, count)
        runs[instances] = run_instances(topics, events, instances, timeout_s)
    one, two = runs[1], runs[2]
    log.info("scale-out: the machine's cores busy %s with one instance, %s with two",
             one.machine_busy, two.machine_busy)
    if two.merchant_waits_given_up:
        log.warning("scale-out: the two instances gave up waiting for each other's merchant "
                    "events %d times: reads after that were stale, so the figure is not that "
                    "of two instances scoring as one pipeline", two.merchant_waits_given_up)
    return {"scale_1_instance": one.eps, "scale_2_instances": two.eps,
            "ratio": two.eps / one.eps if one.eps else None,
            "partitions": SCALE_PARTITIONS, "tx_per_card_day": per_card_day,
            "runs": [one.__dict__, two.__dict__]}
