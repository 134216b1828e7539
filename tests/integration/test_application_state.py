"""Issue 12 on the real broker, on both client adapters: internal topics are named per
application, so two consumer groups never share state; a scorer refuses a changelog another
application wrote (one `error:` line, non-zero exit); `adopt_state_from` takes it over, once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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
    latest_model_snapshots,
    new_group,
    partition_counts,
    produce_traffic,
    read_committed,
    read_to_end,
    scorer_process,
)
from prometheus_client import CollectorRegistry

from stream.config import Settings, load_settings
from stream.serving.wiring import run_scorer
from stream.state.changelog import ForeignStateError


@pytest.fixture(autouse=True)
def _no_orphan_scorers() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture
def io(new_topic: Callable[..., str]) -> dict[str, str]:
    """Input, labels and dead letters; each scorer gets its own verdicts topic."""
    return {"input_topic": new_topic(partitions=PARTITIONS, prefix="tx"),
            "labels_topic": new_topic(partitions=PARTITIONS, prefix="labels"),
            "dlq_topic": new_topic(partitions=1, prefix="dlq")}


@pytest.fixture
def apply_changelog(admin: Any, kafka_bootstrap: str,
                    tmp_path: Path) -> Iterator[Callable[[Settings], str]]:
    """`stream topics apply --config FILE`, FILE naming the group and the topics of these
    settings: it must create the application's own changelog, which is deleted afterwards."""
    created: list[str] = []

    def apply(settings: Settings) -> str:
        keys = ("group_id", "input_topic", "labels_topic", "output_topic", "dlq_topic")
        config = tmp_path / f"{settings.group_id}-{len(created)}.toml"
        config.write_text("".join(f'{key} = "{getattr(settings, key)}"\n' for key in keys))
        done = subprocess.run(
            [sys.executable, "-m", "stream", "topics", "apply", "--bootstrap-servers",
             kafka_bootstrap, "--config", str(config)],
            capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")})
        assert done.returncode == 0, done.stderr
        name = f"{settings.group_id}.changelog"  # the group's name is the application's
        assert f"created    {name}" in done.stdout.splitlines(), done.stdout
        created.append(name)
        return name

    yield apply
    with contextlib.suppress(Exception):
        admin.delete_topics(created, raise_errors=False)


def _settings(bootstrap: str, kafka_client: str, io: dict[str, str], group: str, output: str,
              **extra: Any) -> Settings:
    return load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=kafka_client,
                         group_id=group, output_topic=output, checkpoint_interval_ms=50.0,
                         **io, **extra)


def _scores(bootstrap: str, topic: str, expected: int) -> dict[str, float]:
    return {body["transaction_id"]: body["score"] for body in
            (orjson.loads(r.value) for r in read_committed(bootstrap, topic, expected))}


def _writers(bootstrap: str, changelog: str) -> set[str | None]:
    """The application stamp of every committed record of a changelog."""
    return {dict(record.headers).get("application_id", b"").decode() or None
            for record in read_to_end(bootstrap, changelog)}


def test_two_groups_on_one_input_do_not_share_state(
    kafka_bootstrap: str, kafka_client: str, io: dict[str, str],
    new_topic: Callable[..., str], apply_changelog: Callable[[Settings], str],
) -> None:
    events = produce_traffic(kafka_bootstrap, io["input_topic"], 1_500, seed=31)
    first, second = new_group(), new_group()
    a = _settings(kafka_bootstrap, kafka_client, io, first, new_topic(PARTITIONS, "verdicts"),
                  max_events=len(events))
    b = _settings(kafka_bootstrap, kafka_client, io, second, new_topic(PARTITIONS, "verdicts"),
                  max_events=len(events))
    assert apply_changelog(a) == a.changelog_topic == f"{first}.changelog"
    assert apply_changelog(b) == b.changelog_topic == f"{second}.changelog"

    assert run_scorer(a, CollectorRegistry()).transactions == len(events)
    assert run_scorer(b, CollectorRegistry()).transactions == len(events)

    # The second group started fresh, as the first did: had it restored the first's final
    # state (the bug), it would have scored the same events with a model from their future.
    scores_a = _scores(kafka_bootstrap, a.output_topic, len(events))
    scores_b = _scores(kafka_bootstrap, b.output_topic, len(events))
    assert len(scores_a) == len(scores_b) == len(events)
    assert max(abs(scores_a[k] - scores_b[k]) for k in scores_a) <= 1e-12
    assert _writers(kafka_bootstrap, a.changelog_topic) == {first}
    assert _writers(kafka_bootstrap, b.changelog_topic) == {second}


def test_a_changelog_of_another_application_is_refused_with_one_error_line(
    kafka_bootstrap: str, kafka_client: str, io: dict[str, str],
    new_topic: Callable[..., str],
) -> None:
    produce_traffic(kafka_bootstrap, io["input_topic"], 400, seed=32)
    shared = new_topic(partitions=PARTITIONS, prefix="changelog")
    owner = new_group()
    settings = _settings(kafka_bootstrap, kafka_client, io, owner,
                         new_topic(PARTITIONS, "verdicts"), changelog_topic=shared,
                         max_events=400)
    assert run_scorer(settings, CollectorRegistry()).transactions == 400

    # Another group pointed at it: `stream run --group-id other --changelog-topic shared`.
    other = new_group()
    topics = Topics(io["input_topic"], io["labels_topic"], new_topic(PARTITIONS, "verdicts"),
                    io["dlq_topic"], shared)
    proc = scorer_process(kafka_bootstrap, topics, other, "--max-events", "400",
                          kafka_client=kafka_client)
    code, err = finish(proc)
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
    assert errors[0].startswith(f"error: changelog {shared}[")
    assert f"application '{owner}'" in errors[0] and f"application '{other}'" in errors[0]
    assert f'adopt_state_from = "{owner}"' in errors[0]
    assert _writers(kafka_bootstrap, shared) == {owner}  # the refused scorer wrote nothing
    assert read_committed(kafka_bootstrap, topics.verdicts, 1, timeout_s=3, settle_s=0) == []


def test_adopt_state_from_takes_the_state_over_once(
    kafka_bootstrap: str, kafka_client: str, io: dict[str, str],
    new_topic: Callable[..., str], apply_changelog: Callable[[Settings], str],
) -> None:
    """Blue/green: green joins blue's consumer group (so it continues from blue's committed
    offsets) under an application id of its own, and takes over blue's changelog."""
    produce_traffic(kafka_bootstrap, io["input_topic"], 900, seed=33)
    group = new_group()
    blue = _settings(kafka_bootstrap, kafka_client, io, group, new_topic(PARTITIONS, "v"),
                     max_events=500)
    changelog = apply_changelog(blue)
    assert changelog == blue.changelog_topic
    assert run_scorer(blue, CollectorRegistry()).transactions == 500

    green_id = f"{group}-green"
    green = _settings(kafka_bootstrap, kafka_client, io, group, new_topic(PARTITIONS, "v"),
                      application_id=green_id, changelog_topic=changelog,
                      adopt_state_from=group, max_events=400)
    assert run_scorer(green, CollectorRegistry()).transactions == 400
    # Green went on from blue's state: each partition's model counts every event, blue's too.
    counts = partition_counts(kafka_bootstrap, io["input_topic"])
    assert {p: s.events for p, s in latest_model_snapshots(kafka_bootstrap, changelog).items()} \
        == counts
    assert _writers(kafka_bootstrap, changelog) == {group, green_id}

    # Once: the takeover is recorded, so green restarts without the setting.
    produce_traffic(kafka_bootstrap, io["input_topic"], 100, seed=34)
    again = green.model_copy(update={"adopt_state_from": None, "max_events": 100})
    assert run_scorer(again, CollectorRegistry()).transactions == 100
    counts = partition_counts(kafka_bootstrap, io["input_topic"])
    assert sum(counts.values()) == 1_000
    assert {p: s.events for p, s in latest_model_snapshots(kafka_bootstrap, changelog).items()} \
        == counts

    # Blue, started again on what is now green's changelog, is refused.
    with pytest.raises(ForeignStateError, match=f"application '{green_id}'.*this scorer is "
                       f"application '{group}'"):
        run_scorer(blue.model_copy(update={"max_events": 10}), CollectorRegistry())
