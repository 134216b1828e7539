"""Issue 3 on the real broker: SIGKILL and take-over, restart equivalence, graceful stop,
fencing, at-least-once, each checked with a read_committed consumer."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from durability_support import (
    Topics,
    TrafficStream,
    group_positions,
    kill_leftovers,
    latest_model_snapshots,
    make_topics,
    new_group,
    partition_counts,
    produce_traffic,
    read_committed,
    read_to_end,
    scorer_process,
    scorer_thread,
    scraped,
    stderr_of,
    stop,
    verdict_ids,
    wait_for,
)
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.devtools.broker import LocalBroker, find_free_port
from stream.errors import InfrastructureError
from stream.serving.wiring import run_scorer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    return make_topics(new_topic)


@pytest.fixture(autouse=True)
def _no_orphan_scorers() -> Iterator[None]:
    yield
    kill_leftovers()


def test_sigkill_takeover_and_restart_lose_and_duplicate_nothing(
    kafka_bootstrap: str, kafka_client: str, topics: Topics
) -> None:
    traffic = TrafficStream(kafka_bootstrap, topics.input, 20_000, rate=2_000)
    group = new_group()
    port_a = _free_port()
    a = scorer_process(kafka_bootstrap, topics, group, metrics_port=port_a,
                       kafka_client=kafka_client)
    b = scorer_process(kafka_bootstrap, topics, group, kafka_client=kafka_client)
    try:
        try:
            wait_for(lambda: (scraped(port_a, "fraudstream_events_total", 'outcome="scored"')
                              or 0) >= 1500, 180, "scorer A to score 1,500 events")
        except AssertionError as exc:  # with what both scorers logged so far
            raise AssertionError(f"{exc}\n--- A:\n{stderr_of(a)[-6000:]}\n--- B:\n"
                                 f"{stderr_of(b)[-6000:]}") from None
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        a2 = scorer_process(kafka_bootstrap, topics, group, kafka_client=kafka_client)
        events = traffic.join()
        verdicts = read_committed(kafka_bootstrap, topics.verdicts, 20_000, timeout_s=240)
        code_b, err_b = stop(b)
        code_a2, err_a2 = stop(a2)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    assert code_b == 0, err_b[-2000:]
    assert code_a2 == 0, err_a2[-2000:]
    ids = verdict_ids(verdicts)
    # On a shortfall, where the group's offsets are and what the two survivors logged (a
    # string: pytest shortens the repr of anything else to a line).
    assert len(ids) == 20_000 and set(ids) == {e["transaction_id"] for e in events}, (
        f"{len(ids)} verdicts; group offsets (committed, end) by input partition: "
        f"{group_positions(kafka_bootstrap, group, topics.input)}\n--- B:\n{err_b[-5000:]}"
        f"\n--- A2:\n{err_a2[-5000:]}")
    assert max(ids.values()) == 1, "a committed verdict was duplicated"
    # Every partition's model learned from each labelled event exactly once.
    counts = partition_counts(kafka_bootstrap, topics.input)
    snapshots = latest_model_snapshots(kafka_bootstrap, topics.changelog)
    assert {p: s.learned for p, s in snapshots.items()} == counts, (
        {p: s.events for p, s in snapshots.items()}, err_b[-3000:], err_a2[-3000:])
    assert {p: s.events for p, s in snapshots.items()} == counts


@pytest.mark.parametrize("state", ["partition", "shared", "shared-images"])
def test_stop_and_restart_scores_exactly_like_an_uninterrupted_run(
    kafka_bootstrap: str, kafka_client: str, new_topic: Callable[..., str], state: str
) -> None:
    """Also with the shared merchant table and champion: rebuilt from the whole merchant feed
    on the restart (a restore longer than max_task_idle_ms once let the first partition
    fetched run ahead of the others, and the restarted run read merchant state stale), or
    (`shared-images`, an image every half second) from the latest table image and the feed
    after it."""
    interrupted, straight = make_topics(new_topic), make_topics(new_topic)
    events = produce_traffic(kafka_bootstrap, interrupted.input, 16_000, seed=21)
    produce_traffic(kafka_bootstrap, straight.input, 16_000, seed=21)
    # The stream spans 1.7 days of event time: a 6-hour weight average is in use for most of
    # it, so the comparison covers the average the changelog carries with the model too.
    mode = state.split("-")[0]
    base: dict[str, Any] = {"bootstrap_servers": kafka_bootstrap, "checkpoint_interval_ms": 50.0,
                            "merchant_state": mode, "model_state": mode, "average_days": 0.25}
    if state == "shared-images":
        base["merchant_image_interval_s"] = 0.5

    def run(topics: Topics, group: str, max_events: int) -> CollectorRegistry:
        settings = load_settings(environ={}, group_id=group, max_events=max_events,
                                 kafka_client=kafka_client,
                                 **topics.settings(), **base)
        registry = CollectorRegistry()
        assert run_scorer(settings, registry).transactions == max_events
        return registry

    group = new_group()
    first = run(interrupted, group, 10_000)
    second = run(interrupted, group, 6_000)  # a new process: state restored from the changelog
    run(straight, new_group(), 16_000)
    if state == "shared-images":
        images = "fraudstream_merchant_images_total"
        assert (first.get_sample_value(images, {"event": "written"}) or 0) >= 1
        assert second.get_sample_value(images, {"event": "loaded"}) == 1
        assert second.get_sample_value(images, {"event": "refused"}) is None

    def scores(topics: Topics) -> dict[str, float]:
        records = read_committed(kafka_bootstrap, topics.verdicts, 16_000)
        return {b["transaction_id"]: b["score"] for b in map(orjson.loads,
                                                               (r.value for r in records))}

    a, b = scores(interrupted), scores(straight)
    assert len(a) == len(b) == len(events)
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= 1e-12, worst


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    kafka_bootstrap: str, kafka_client: str, topics: Topics
) -> None:
    traffic = TrafficStream(kafka_bootstrap, topics.input, 20_000, rate=2_000, seed=5)
    port = _free_port()
    proc = scorer_process(kafka_bootstrap, topics, new_group(), metrics_port=port,
                          kafka_client=kafka_client)
    wait_for(lambda: (scraped(port, "fraudstream_events_total", 'outcome="scored"') or 0)
             >= 2000, 90, "the scorer to get going")
    started = time.monotonic()
    code, err = stop(proc, timeout_s=30)
    assert code == 0, err[-2000:]
    assert time.monotonic() - started < 30
    traffic.join()
    # What was committed is consistent: every committed verdict once, and as many verdicts
    # as records the committed offsets cover.
    verdicts = read_committed(kafka_bootstrap, topics.verdicts, 1, settle_s=3)
    ids = verdict_ids(verdicts)
    assert max(ids.values()) == 1
    snapshots = latest_model_snapshots(kafka_bootstrap, topics.changelog)
    assert sum(s.events for s in snapshots.values()) == len(ids)


def test_a_paused_zombie_cannot_corrupt_the_output(
    kafka_bootstrap: str, kafka_client: str, topics: Topics
) -> None:
    """An instance frozen past its session timeout (a long GC pause, a stalled VM) loses its
    partitions to its peer; when it wakes up, its open transaction is fenced by the group
    metadata sent with its offsets (KIP-447), so nothing it wrote becomes visible; it
    rewinds, rejoins and both finish with exactly one committed verdict per transaction."""
    traffic = TrafficStream(kafka_bootstrap, topics.input, 12_000, rate=500, seed=8)
    group = new_group()
    port = _free_port()
    zombie = scorer_process(kafka_bootstrap, topics, group, metrics_port=port,
                            kafka_client=kafka_client)
    peer = scorer_process(kafka_bootstrap, topics, group, kafka_client=kafka_client)
    wait_for(lambda: (scraped(port, "fraudstream_events_total", 'outcome="scored"') or 0)
             >= 500, 90, "the first instance to get going")
    zombie.send_signal(signal.SIGSTOP)
    time.sleep(12)  # twice the 6 s session timeout: the peer takes every partition
    zombie.send_signal(signal.SIGCONT)
    traffic.join()
    verdicts = read_committed(kafka_bootstrap, topics.verdicts, 12_000, timeout_s=180)
    code_z, err_z = stop(zombie)
    code_p, err_p = stop(peer)
    assert code_z == 0, err_z[-2000:]
    assert code_p == 0, err_p[-2000:]
    ids = verdict_ids(verdicts)
    assert len(ids) == 12_000 and max(ids.values()) == 1


def test_at_least_once_loses_nothing_under_sigkill(
    kafka_bootstrap: str, kafka_client: str, topics: Topics
) -> None:
    traffic = TrafficStream(kafka_bootstrap, topics.input, 12_000, rate=1_500, seed=3)
    group = new_group()
    port = _free_port()
    first = scorer_process(kafka_bootstrap, topics, group, "--guarantee", "at-least-once",
                           metrics_port=port, kafka_client=kafka_client)
    wait_for(lambda: (scraped(port, "fraudstream_events_total", 'outcome="scored"') or 0)
             >= 2_500, 90, "the first instance to get going")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # What the killed instance wrote, and how much of its input it had committed: the rest
    # of what it wrote is done again by its successor, so this is the duplicates' count.
    written = len(read_to_end(kafka_bootstrap, topics.verdicts))
    committed = sum(c or 0 for c, _ in group_positions(kafka_bootstrap, group,
                                                       topics.input).values())
    second = scorer_process(kafka_bootstrap, topics, group, "--guarantee", "at-least-once",
                            kafka_client=kafka_client)
    try:
        events = traffic.join()
        verdicts = read_committed(kafka_bootstrap, topics.verdicts, 12_000, timeout_s=180,
                                  ids={e["transaction_id"] for e in events})
    finally:
        code, err = stop(second)
    assert code == 0, err[-2000:]
    ids = verdict_ids(verdicts)
    assert set(ids) == {e["transaction_id"] for e in events}
    duplicates = sum(ids.values()) - len(ids)
    print(f"at-least-once after SIGKILL: {written} verdicts written, {committed} inputs "
          f"committed, {duplicates} duplicates")
    assert duplicates == written - committed
    # A scorer started on a backlog committed nothing in its first 4,228-4,783 records (its
    # first release), and its successor scored them all again: now at most a few turns of
    # `max_poll_records` (500) are done again (Intake.release).
    assert committed > 0 and written - committed <= 2_500


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_client: str
) -> None:
    """The scorer keeps running through a broker stopped for 10 s and restarted on the same
    log dir: the client retries, a checkpoint that fails makes the loop back off, rewind to
    its last checkpoint and resume; every verdict ends up committed exactly once and
    `fraudstream_broker_up` showed the outage."""
    outage_s = 10.0
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path / "broker")
    bootstrap = broker.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        names = [f"{role}-{new_group()}" for role in ("tx", "labels", "verdicts", "dlq", "cl")]
        admin.create_topics([NewTopic(n, 1 if n.startswith("dlq") else 4, 1) for n in names])
        admin.close()
        topics = Topics(*names)
        traffic = TrafficStream(bootstrap, topics.input, 20_000, rate=1_000, seed=13)
        registry = CollectorRegistry()
        settings = load_settings(
            environ={}, bootstrap_servers=bootstrap, group_id=new_group(), max_events=20_000,
            kafka_client=kafka_client,
            checkpoint_interval_ms=50.0, session_timeout_ms=6000, max_outage_s=120.0,
            request_timeout_ms=5000, **topics.settings())
        thread, outcome = scorer_thread(settings, registry)
        # A fresh broker creates its transaction-state and offsets topics on first use,
        # which on a loaded 2-core machine has taken over 90 s.
        wait_for(lambda: (registry.get_sample_value(
            "fraudstream_events_total", {"outcome": "scored"}) or 0) >= 3000, 180,
            "the scorer to get going")
        broker.stop()
        wait_for(lambda: registry.get_sample_value("fraudstream_broker_up") == 0, 10,
                 "the broker_up gauge to show the outage")
        time.sleep(outage_s)
        broker.start()
        events = traffic.join()
        thread.join(timeout=300)
        assert not thread.is_alive(), "scorer did not finish after the broker came back"
        assert "error" not in outcome, outcome.get("error")
        recoveries = registry.get_sample_value("fraudstream_recoveries_total",
                                               {"reason": "infrastructure"}) or 0
        print(f"outage {outage_s}s: {recoveries} infrastructure recoveries")
        assert sum(partition_counts(bootstrap, topics.input).values()) == 20_000
        ids = verdict_ids(read_committed(bootstrap, topics.verdicts, 20_000, timeout_s=60))
        missing = sorted({e["transaction_id"] for e in events} - set(ids))
        assert not missing, (f"{len(missing)} transactions without a verdict, from "
                             f"{missing[0]} to {missing[-1]}; {outcome.get('result')}")
        assert max(ids.values()) == 1
    finally:
        broker.stop()


def test_a_broker_gone_for_good_ends_the_scorer_with_a_clear_error(
    tmp_path: Path, kafka_client: str
) -> None:
    """kafka-python retries inside poll() forever; the scorer must still give up after
    max_outage_s so its orchestrator can act, instead of spinning silently."""
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path / "broker")
    bootstrap = broker.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        names = [f"{role}-{new_group()}" for role in ("tx", "labels", "verdicts", "dlq", "cl")]
        admin.create_topics([NewTopic(n, 1, 1) for n in names])
        admin.close()
        settings = load_settings(environ={}, bootstrap_servers=bootstrap, group_id=new_group(),
                                 kafka_client=kafka_client,
                                 max_outage_s=4.0, **Topics(*names).settings())
        outcome: dict[str, BaseException] = {}

        def _run() -> None:
            try:
                run_scorer(settings, CollectorRegistry())
            except BaseException as exc:  # noqa: B036 - recorded for the assertion
                outcome["error"] = exc

        thread = threading.Thread(target=_run)
        thread.start()
        time.sleep(4)
        broker.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the scorer kept running without a broker"
        assert isinstance(outcome.get("error"), InfrastructureError)
        assert "unreachable" in str(outcome["error"]) or "unavailable" in str(outcome["error"])
    finally:
        broker.stop()

