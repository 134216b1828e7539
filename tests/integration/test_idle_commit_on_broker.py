"""An idle at-least-once scorer commits its last checkpoint's offsets (issue 13), on both
clients and a broker of the test's own (it is stopped and started).

A checkpoint's offsets used to be committed by the next checkpoint, once acknowledged, and a
scorer with no input makes none: after a burst, the group kept the last checkpoint's records
as lag until input came again, a crash did them again, and a broker restart longer than the
session timeout rewound the scorer for them (`Rebalance.on_lost`)."""

from __future__ import annotations

import time
from pathlib import Path

from durability_support import (
    Topics,
    group_positions,
    new_group,
    produce_traffic,
    scorer_thread,
    wait_for,
)
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.devtools.broker import LocalBroker, find_free_port
from stream.serving.ledger import RunResult


def test_an_idle_scorer_commits_its_offsets_and_a_broker_restart_rewinds_nothing(
    tmp_path: Path, kafka_client: str
) -> None:
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path / "broker")
    bootstrap = broker.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        names = [f"{role}-{new_group()}" for role in ("tx", "labels", "verdicts", "dlq", "cl")]
        admin.create_topics([NewTopic(n, 2, 1) for n in names])
        admin.close()
        topics = Topics(*names)
        group = new_group()
        settings = load_settings(
            environ={}, bootstrap_servers=bootstrap, group_id=group, kafka_client=kafka_client,
            guarantee="at-least-once", max_events=400, max_outage_s=120.0,
            request_timeout_ms=5000, **topics.settings())
        thread, outcome = scorer_thread(settings, CollectorRegistry())
        produce_traffic(bootstrap, topics.input, 300, seed=3)

        def committed_to_the_end() -> bool:
            positions = group_positions(bootstrap, group, topics.input)
            return all(committed == end for committed, end in positions.values())

        # Idle after the 300: before, the last checkpoint's offsets stayed uncommitted here.
        wait_for(committed_to_the_end, 60,
                 "the group's offsets at the end of the input while the scorer waits for more")
        assert sum(end for _, end in group_positions(bootstrap, group, topics.input).values()) \
            == 300

        broker.stop()  # 20 s, past the 10 s session timeout: the group drops the member
        assert thread.is_alive(), outcome
        time.sleep(20)
        broker.start()
        produce_traffic(bootstrap, topics.input, 100, seed=4)
        thread.join(timeout=120)
        assert not thread.is_alive(), "the scorer did not finish after the broker came back"
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert isinstance(result, RunResult)
        # The loss found everything committed: no rewind, nothing done twice.
        assert (result.recoveries, result.transactions) == (0, 400), result
        assert committed_to_the_end()
    finally:
        broker.stop()
