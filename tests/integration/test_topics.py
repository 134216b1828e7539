"""`apply_topics` against a real broker, on both client adapters: creates, is idempotent, and
reports drift. The `admin` fixture (kafka-python's own client) only inspects the result."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from stream.contracts.topics import ROLES, TopicSpec, load_specs
from stream.kafka.admin import apply_topics, missing_topics


@pytest.fixture
def specs(admin: Any) -> Iterator[dict[str, TopicSpec]]:
    """The real specs under unique names, so tests never share topics; deleted afterwards."""
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    renamed = {role: s.renamed(f"{prefix}.{role}") for role, s in load_specs().items()}
    yield renamed
    existing = set(admin.list_topics())
    names = [s.name for s in renamed.values() if s.name in existing]
    if names:
        admin.delete_topics(names, raise_errors=False)


def _described(admin: Any, names: list[str], timeout_s: float = 10.0) -> dict[str, Any]:
    """kafka-python's describe, once every topic shows its partitions: a topic just created
    can be described from a broker's metadata cache that has not caught up (0 partitions)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = {t["name"]: t for t in admin.describe_topics(names)}
        if all(described.get(n, {}).get("partitions") for n in names) or (
                time.monotonic() > deadline):
            return described
        time.sleep(0.2)


def test_apply_creates_every_topic_as_specified(
    admin: Any, clients: Any, specs: dict[str, TopicSpec]
) -> None:
    report = apply_topics(clients.admin(), specs.values())
    assert sorted(report.created) == sorted(s.name for s in specs.values())
    assert report.unchanged == [] and report.drifted == {} and report.ok
    assert len(report.lines()) == len(ROLES)

    described = _described(admin, [s.name for s in specs.values()])
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name, list(s.config))
                 for s in specs.values()]
    configs = admin.describe_configs(resources, config_filter="all")["topic"]
    for spec in specs.values():
        assert len(described[spec.name]["partitions"]) == spec.partitions
        actual = {key: entry["value"] for key, entry in configs[spec.name].items()}
        assert actual == spec.config
    assert configs[specs["transactions.changelog"].name]["cleanup.policy"]["value"] == "compact"


def test_second_apply_creates_nothing(clients: Any, specs: dict[str, TopicSpec]) -> None:
    apply_topics(clients.admin(), specs.values())
    again = apply_topics(clients.admin(), specs.values())
    assert again.created == [] and again.drifted == {}
    assert sorted(again.unchanged) == sorted(s.name for s in specs.values())
    assert all(line.startswith("unchanged") for line in again.lines())


def test_wrong_partition_count_is_reported_not_changed(
    admin: Any, clients: Any, new_topic: Callable[..., str]
) -> None:
    name = new_topic(partitions=1, prefix="drift")
    spec = load_specs()["transactions"].renamed(name)
    report = apply_topics(clients.admin(), [spec])
    assert report.created == [] and report.unchanged == []
    assert "1 partitions, spec says 4" in report.drifted[name]
    assert not report.ok and any("DRIFT" in line for line in report.lines())
    (described,) = admin.describe_topics([name])
    assert len(described["partitions"]) == 1  # reported, never altered


def test_wrong_config_is_reported(
    admin: Any, clients: Any, specs: dict[str, TopicSpec]
) -> None:
    spec = specs["transactions.changelog"]
    admin.create_topics({spec.name: {"num_partitions": spec.partitions, "replication_factor": 1,
                                     "configs": {"cleanup.policy": "delete"}}},
                        wait_for_metadata=True)
    report = apply_topics(clients.admin(), [spec])
    assert "cleanup.policy=delete, spec says compact" in report.drifted[spec.name]


def test_missing_topics_lists_only_absent_ones(
    clients: Any, new_topic: Callable[..., str]
) -> None:
    present = new_topic()
    absent = f"absent-{uuid.uuid4().hex[:8]}"
    assert missing_topics(clients.admin(), [present, absent]) == [absent]
