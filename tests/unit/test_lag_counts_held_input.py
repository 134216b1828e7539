"""Lag and the stall warning count input the scorer has fetched but not done (serving/loop.py
`_refresh_gauges`, Ledger.positions).

They counted from the client's position for every source nothing was done on since the last
checkpoint; that position moves when a record is fetched. Two kafka-python instances in the
clean-clone CI stopped scoring with their input fetched and not done, and for 4 minutes the
lag said 0 and no stall was reported. Here the loop fetches 15 records and scores the first
5, which the other instance's merchant frontier lets through (the shared merchant table, as
in test_gated_checkpoint.py, the wait an hour), and checkpoints them: ten records wait."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from keys_support import KEY
from loop_support import LABELS, TX, Clients, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record, Source
from stream.kafka.testing import MemoryConsumer
from stream.observability.lag import StallWatch
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


class Fetching(MemoryConsumer):
    """Hands out queued polls and keeps a client's position and high watermark per source,
    as the real adapters do: lag is the high watermark less the position given, else less
    the client's own position."""

    def __init__(self, polls: list[Polled]) -> None:
        super().__init__(polls)
        self.position: dict[Source, int] = {TX: 0, LABELS: 0}

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        if not self.assigned:
            self.assigned = [TX, LABELS]
            assert self.listener is not None
            self.listener.on_assigned(list(self.assigned))
        polled = super().poll(max_records, timeout_s)
        for record in polled.records:
            self.position[record.source] = record.offset + 1
        return polled

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        high = {TX: 15, LABELS: 0}
        return {s: max(0, high[s] - positions.get(s, self.position[s])) for s in high}


def test_input_fetched_and_held_counts_as_lag_and_as_a_stall(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        environ={}, group_id="g", input_topic="tx", labels_topic="labels",
        output_topic="verdicts", changelog=False, merchant_state="shared",
        merchant_max_wait_ms=3_600_000.0, max_task_idle_ms=3_600_000.0)
    records: list[Record] = tx_records(15)
    times = [decode_transaction(r.value or b"").timestamp for r in records]
    remote = (times[4] + times[5]) / 2 - settings.merchant_delta_s  # lets the first 5 through
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                        merchant_partitions=2, merchant_feed=True)
    consumer = Fetching([Polled(records, [TX, LABELS])])
    producer = TransactionalLog(fail_commits=set())
    registry = CollectorRegistry()
    loop = ScorerLoop(settings, pipeline, Metrics(registry), Clients(producer),
                      consumer,  # type: ignore[arg-type]
                      ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    assert loop.feed is not None
    loop.feed.rebuild = lambda: pipeline.apply_feed(1, 1, [], remote, remote)  # type: ignore[method-assign]
    loop.consumer.subscribe(["tx", "labels"], loop.rebalance)
    assert loop._poll_once(None) == 5
    loop.checkpoints.commit()
    assert len(loop.intake) == 10 and consumer.position[TX] == 15  # fetched, held

    loop._stall = StallWatch(after_s=0.0)
    caplog.set_level(logging.WARNING, logger="stream.serving")
    loop._refresh_gauges(force=True)
    loop._refresh_gauges(force=True)
    lag = registry.get_sample_value("fraudstream_consumer_lag",
                                    {"topic": "tx", "partition": "0"})
    assert lag == 10
    stalls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nothing done")]
    assert stalls and "10 input records wait" in stalls[0] and "the intake holds 10" in stalls[0]
