"""The Kafka-backed check: the same stream through a real broker and `stream run`, 4 partitions.

The records are produced keyed by card with the murmur2 partitioner (the Java client's, which
the in-process partitioning reproduces), transactions and labels interleaved in event time as
payment and case-management systems would send them. One `stream run --max-events N` drains
the backlog; its committed verdicts are read back. If the in-process "4 partitions" is what a
consumer group really sees, the two agree on every score.
"""

from __future__ import annotations

import logging
import os
import re
import time

import numpy as np

from benchmarks.bench.harness import Topics
from benchmarks.bench.scorer import ScorerProcess, stream_command
from benchmarks.quality.dataset import Dataset
from stream.contracts.codec import decode_verdict
from stream.kafka.classify import ClientError
from stream.kafka.clients import connect
from stream.kafka.delivery import send_waiting
from stream.kafka.records import BEGINNING
from stream.serving.ledger import MERCHANT_WAITS, REWINDS, UNALIGNED

log = logging.getLogger("benchmarks.quality")
PARTITIONS = 4


_DEPARTURES = {name: re.compile(rf"; (\d+) {re.escape(phrase)}") for name, phrase in (
    ("rewinds", REWINDS), ("unaligned_records", UNALIGNED),
    ("merchant_wait_timeouts", MERCHANT_WAITS))}


def departures(exit_line: str) -> dict[str, float]:
    """What the scorer's exit line says could make its scores depart from the replay's: the
    live run agrees exactly with online_p4 only when all three are 0.

    >>> departures("processed 9 records: ...; 2 rewinds; 310 records released out of "
    ...            "assured event-time order (max_task_idle_ms)")
    {'rewinds': 2.0, 'unaligned_records': 310.0, 'merchant_wait_timeouts': 0.0}
    """
    return {name: float(m[1]) if (m := pattern.search(exit_line)) else 0.0
            for name, pattern in _DEPARTURES.items()}


def _produce(topics: Topics, data: Dataset) -> float:
    producer = connect(topics.settings()).producer(linger_ms=20.0)
    started = time.perf_counter()
    failed: list[ClientError] = []

    def delivered(error: ClientError | None) -> None:
        if error is not None:
            failed.append(error)

    for is_label, key, value in data.raw:
        topic = topics.labels if is_label else topics.input
        send_waiting(producer, topic, key, value, on_delivery=delivered)
    left = producer.flush(120.0)
    if left or failed:
        raise RuntimeError(f"{left} records not acknowledged, {len(failed)} failed")
    return time.perf_counter() - started


def _read_verdicts(topics: Topics, output: str, expected: int,
                   timeout_s: float) -> dict[str, tuple[float, bool]]:
    """Score and "not approved" per transaction id, as the verdicts topic has them."""
    reader = connect(topics.settings()).reader(bulk=True)
    reader.assign({(output, p): BEGINNING for p in range(PARTITIONS)})
    scores: dict[str, tuple[float, bool]] = {}
    at_end: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            polled = reader.poll(10_000, 0.5)
            for record in polled.records:
                body = decode_verdict(record.value or b"{}")
                scores[body["transaction_id"]] = (body["score"], body["decision"] != "approve")
                at_end.discard(record.source)
            at_end.update(polled.at_end)
            if len(scores) >= expected and len(at_end) == PARTITIONS:
                break
    finally:
        reader.close()
    return scores


def run_kafka_check(bootstrap: str, data: Dataset, timeout_s: float = 1800.0) -> tuple[
        np.ndarray, np.ndarray, dict[str, float]]:
    """Scores and alerts (decisions other than approve) per transaction, in dataset order,
    from `stream run` on a real broker."""
    topics = Topics(bootstrap)
    try:
        topics.create_base()
        output = topics.fresh("verdicts")
        produce_s = _produce(topics, data)
        n = len(data.transactions)
        log.info("kafka check: produced %d records in %.1fs; scoring", len(data.raw), produce_s)
        command = stream_command(
            bootstrap, "run", "--max-events", str(n), "--group-id",
            f"quality-{topics.run_id}", "--input-topic", topics.input, "--labels-topic",
            topics.labels, "--output-topic", output, "--dlq-topic", topics.dlq,
            "--changelog-topic", topics.changelog)
        started = time.perf_counter()
        # The in-process online_p4 shares its merchant table and its champion: so does this
        # scorer (its own environment: the drift benchmark that follows runs in this one).
        env = {**os.environ, "FRAUDSTREAM_MERCHANT_STATE": "shared",
               "FRAUDSTREAM_MODEL_STATE": "shared"}
        with ScorerProcess(command, env) as scorer:
            code = scorer.wait(timeout_s)
            if code != 0:
                raise RuntimeError(f"`stream run` exited {code}:\n{scorer.tail()}")
            exit_line = next((line for line in reversed(scorer.lines)
                              if line.startswith("processed ")), "")
        log.info("kafka check: %s", exit_line or "no exit line")
        run_s = time.perf_counter() - started
        verdicts = _read_verdicts(topics, output, n, timeout_s=120.0)
    finally:
        topics.delete_all()
    scores = np.full(n, np.nan)
    alerts = np.zeros(n, dtype=bool)
    for tx_id, (score, alert) in verdicts.items():
        scores[data.index[tx_id]] = score
        alerts[data.index[tx_id]] = alert
    return scores, alerts, {"produce_s": round(produce_s, 1), "run_s": round(run_s, 1),
                            "verdicts": float(len(verdicts)), **departures(exit_line)}
