"""An assignment whose committed offsets cannot be read, on the real broker (kafka-python).

After a SIGKILL, the dead instance's open transaction holds its offsets back: the broker
answers an offset fetch with "unstable" until the transaction ends, up to its timeout, and
kafka-python's read of them can time out inside the rebalance. The clean-clone CI met it in
the SIGKILL take-over test. The adapter raised before the scorer heard of the assignment, so
the scorer scored partitions it did not know it had: its intake did not align their labels,
and health said no partition was assigned. The read's failure is injected here (the first
one, the assignment's); librdkafka reads committed offsets inside its own assignment and
retries an unstable answer itself, so the path is kafka-python's alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from durability_support import (
    make_topics,
    new_group,
    produce_traffic,
    read_committed,
    scorer_thread,
    verdict_ids,
)
from kafka import errors as kerr
from kafka.coordinator.consumer import ConsumerCoordinator
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.serving.ledger import RunResult

EVENTS = 3_000


def test_an_assignment_whose_committed_offsets_time_out_is_still_an_assignment(
    kafka_bootstrap: str, new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topics = make_topics(new_topic)
    events = produce_traffic(kafka_bootstrap, topics.input, EVENTS)
    real = ConsumerCoordinator.fetch_committed_offsets
    injected: list[Any] = []

    def first_read_times_out(self: Any, partitions: Any, timeout_ms: Any = None) -> Any:
        if not injected and any(tp.topic == topics.input for tp in partitions):
            injected.append(sorted(partitions))
            raise kerr.KafkaTimeoutError("injected: an open transaction holds the offsets")
        return real(self, partitions, timeout_ms)

    monkeypatch.setattr(ConsumerCoordinator, "fetch_committed_offsets", first_read_times_out)
    caplog.set_level(logging.INFO, logger="stream.serving")
    settings = load_settings(
        environ={}, bootstrap_servers=kafka_bootstrap, group_id=new_group(),
        kafka_client="kafka-python", max_events=EVENTS, idle_exit_s=30.0,
        checkpoint_interval_ms=50.0, session_timeout_ms=6000, **topics.settings())
    thread, outcome = scorer_thread(settings, CollectorRegistry())
    thread.join(240)
    assert not thread.is_alive(), "the scorer did not finish"
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert isinstance(result, RunResult)
    assert injected, "the committed offsets were never read on assignment"
    assert result.recoveries >= 1  # the failed read rewound the loop to committed offsets
    messages = [r.getMessage() for r in caplog.records]
    assigned = [m for m in messages if m.startswith("partitions assigned:")]
    assert assigned and all(f"{topics.input}[{p}]" in assigned[0] for p in range(4)), messages
    verdicts = read_committed(kafka_bootstrap, topics.verdicts, EVENTS, timeout_s=60)
    ids = verdict_ids(verdicts)
    assert len(ids) == EVENTS and set(ids) == {e["transaction_id"] for e in events}
    assert max(ids.values()) == 1
