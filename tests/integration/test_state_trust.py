"""Issue 13, items 2 and 3, on the real broker and both client adapters: a forged model
snapshot written to the changelog is refused with one `error:` line before anything of it
runs; corrupt rows in the changelog are quarantined (skipped, counted, logged by key) and the
scorer scores on."""

from __future__ import annotations

import logging
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from durability_support import (
    PARTITIONS,
    Topics,
    finish,
    kill_leftovers,
    make_topics,
    new_group,
    produce_traffic,
    read_committed,
    scorer_process,
)
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.serving.wiring import run_scorer
from stream.state.changelog import MODEL_KEY, stamp
from stream.state.snapshot import MAGIC


@pytest.fixture(autouse=True)
def _no_orphan_scorers() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> Topics:
    return make_topics(new_topic)


class _MakesDirectory:
    """Pickles to `os.mkdir(path)`: what an attacker's `os.system("id")` would be, made
    visible. The pickle names only `os.mkdir`, so any process that unpickled it would run it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _write(bootstrap: str, topic: str, rows: list[tuple[int, bytes, bytes]],
           application: str) -> None:
    """Rows into the changelog as another writer would: stamped with the application id, so
    only their content, not their owner, is in question."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for partition, key, value in rows:
        producer.send(topic, key=key, value=value, partition=partition,
                      headers=list(stamp(application)))
    producer.flush()
    producer.close()


def test_a_forged_changelog_snapshot_is_refused_and_runs_nothing(
    kafka_bootstrap: str, kafka_client: str, topics: Topics, tmp_path: Path,
) -> None:
    produce_traffic(kafka_bootstrap, topics.input, 200, seed=41)
    group = new_group()
    marker = tmp_path / "pwned"
    head = orjson.dumps({"format": 2, "mac": "hmac-sha256", "key_id": "000000000000",
                         "river": "0.22.0", "package": "0.1.0", "partition": 0, "events": 1,
                         "learned": 1, "model_name": "x"})
    forged = (MAGIC + struct.pack(">I", len(head)) + head + bytes(32)
              + pickle.dumps(_MakesDirectory(marker)))
    _write(kafka_bootstrap, topics.changelog, [(0, MODEL_KEY, forged)], group)

    proc = scorer_process(kafka_bootstrap, topics, group, "--max-events", "200",
                          kafka_client=kafka_client)
    code, err = finish(proc)
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
    assert errors[0].startswith(f"error: changelog {topics.changelog}[0] model snapshot failed "
                                "authentication: its tag does not match"), errors[0]
    assert not marker.exists()  # nothing was unpickled
    assert read_committed(kafka_bootstrap, topics.verdicts, 1, timeout_s=3, settle_s=0) == []


def test_corrupt_changelog_rows_are_quarantined_and_the_scorer_scores_on(
    kafka_bootstrap: str, kafka_client: str, topics: Topics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = produce_traffic(kafka_bootstrap, topics.input, 600, seed=42)
    group = new_group()
    bad = [
        (0, b"c:not-json", b"[1.0, 2.0"),
        (1, b"c:\xff\xfe", b"[1.0, 2.0]"),  # not UTF-8
        (2, b"p:t-arity", b'["m1", 1.7e9, 0.5]'),
        (3, b"p:t-width", orjson.dumps(["m1", 1.7e9, 0.5, [0.0, 1.0, 2.0]])),
        (0, b"n:m-nan", b"[1.7e9, NaN, 1.0]"),
        (1, b"c:types", b'[1.7e9, "two", null]'),
    ]
    _write(kafka_bootstrap, topics.changelog, bad, group)
    settings = load_settings(environ={}, bootstrap_servers=kafka_bootstrap,
                             kafka_client=kafka_client, group_id=group,
                             checkpoint_interval_ms=50.0, max_events=len(events),
                             **topics.settings())
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="stream.serving"):
        result = run_scorer(settings, registry)
    assert result.transactions == result.verdicts == len(events)

    def quarantined(store: str, reason: str) -> float | None:
        return registry.get_sample_value("fraudstream_state_rows_quarantined_total",
                                         {"store": store, "reason": reason})

    assert quarantined("card", "not_json") == 1
    assert quarantined("card", "not_utf8") == 1
    assert quarantined("card", "bad_shape") == 1
    assert quarantined("pending", "bad_shape") == 1
    assert quarantined("pending", "wrong_width") == 1
    assert quarantined("merchant", "not_finite") == 1
    lines = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(lines) == len(bad)
    for _, key, _ in bad:
        assert any(repr(key) in line for line in lines), key
    assert "Traceback" not in caplog.text
    verdicts = read_committed(kafka_bootstrap, topics.verdicts, len(events))
    assert len({orjson.loads(r.value)["transaction_id"] for r in verdicts}) == len(events)
    assert {r.partition for r in verdicts} == set(range(PARTITIONS))

    # The run's checkpoints tombstoned the quarantined keys: a restart restores every
    # partition again and meets none of them (each was counted again on every restore).
    more = produce_traffic(kafka_bootstrap, topics.input, 100, seed=43)
    again = CollectorRegistry()
    restarted = run_scorer(settings.model_copy(update={"max_events": len(more)}), again)
    assert restarted.transactions == len(more)
    assert again.get_sample_value("fraudstream_restore_seconds_count") == PARTITIONS
    counted = [s.value for metric in again.collect()
               if metric.name == "fraudstream_state_rows_quarantined"
               for s in metric.samples if s.name.endswith("_total")]
    assert counted and sum(counted) == 0
