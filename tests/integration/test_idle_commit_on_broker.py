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
    finished,
    fresh_topics,
    group_positions,
    new_group,
    produce_traffic,
    scorer_thread,
    wait_for,
)
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.devtools.broker import LocalBroker, find_free_port


def test_an_idle_scorer_commits_its_offsets_and_a_broker_restart_rewinds_nothing(
    tmp_path: Path, kafka_client: str
) -> None:
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path / "broker")
    bootstrap = broker.start()
    try:
        topics = fresh_topics(bootstrap, 2)
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
        result = finished(thread, outcome)
        # The loss found everything committed: no rewind, nothing done twice.
        assert (result.recoveries, result.transactions) == (0, 400), result
        assert committed_to_the_end()
    finally:
        broker.stop()
