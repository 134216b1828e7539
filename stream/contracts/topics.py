"""Topics as code: the specs and value schemas in `topics/`, and an idempotent `apply`.

`apply_topics` creates what is missing and only *reports* topics whose partition count or
listed config differs from the spec: changing partitions of a keyed topic moves keys between
partitions (and so breaks per-partition state), which must be a deliberate human act.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from stream.errors import ConfigError, InfrastructureError

TOPICS_DIR = Path(__file__).resolve().parents[2] / "topics"
ROLES = ("transactions", "labels", "verdicts", "transactions.dlq", "transactions.changelog")
# Roles keyed by card_id whose partition N must line up with partition N of `transactions`.
CO_PARTITIONED = ("labels", "transactions.changelog")
_TOPIC_ALREADY_EXISTS = 36


class TopicSpecError(ConfigError):
    """A spec file in `topics/` is malformed or inconsistent."""


class TopicApplyError(InfrastructureError):
    """The broker refused to create a topic (bad config, not authorised, ...)."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in `topics/<role>.toml`; `config` values are Kafka strings."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict, hash=False)
    key: str = ""
    description: str = ""
    role: str = ""

    def renamed(self, name: str) -> TopicSpec:
        """The same spec under another name (CLI `--input-topic` and friends)."""
        return dataclasses.replace(self, name=name, config=dict(self.config))


def _kafka_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"unsupported config value {value!r}")


def _parse_spec(path: Path) -> TopicSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TopicSpecError(f"{path.name}: invalid TOML: {exc}") from None
    name = raw.get("name")
    partitions = raw.get("partitions")
    replicas = raw.get("replication_factor", 1)
    if not isinstance(name, str) or not name:
        raise TopicSpecError(f"{path.name}: 'name' must be a non-empty string")
    for label, value in (("partitions", partitions), ("replication_factor", replicas)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TopicSpecError(f"{path.name}: '{label}' must be an integer >= 1")
    table = raw.get("config", {})
    if not isinstance(table, dict):
        raise TopicSpecError(f"{path.name}: [config] must be a table")
    try:
        config = {str(k): _kafka_str(v) for k, v in table.items()}
    except TypeError as exc:
        raise TopicSpecError(f"{path.name}: {exc}") from None
    assert isinstance(partitions, int) and isinstance(replicas, int)
    return TopicSpec(name=name, partitions=partitions, replication_factor=replicas,
                     config=config, key=str(raw.get("key", "")),
                     description=str(raw.get("description", "")), role=path.stem)


def load_specs(topics_dir: Path | None = None) -> dict[str, TopicSpec]:
    """All specs keyed by role (the file stem), checking that co-partitioned topics agree."""
    directory = topics_dir or TOPICS_DIR
    specs = {p.stem: _parse_spec(p) for p in sorted(directory.glob("*.toml"))}
    if not specs:
        raise TopicSpecError(
            f"no topic specs (*.toml) in {directory}; point FRAUDSTREAM_TOPICS_DIR or "
            "--topics-dir at the project's topics/ directory"
        )
    base = specs.get("transactions")
    for role in CO_PARTITIONED:
        other = specs.get(role)
        if base is not None and other is not None and other.partitions != base.partitions:
            raise TopicSpecError(
                f"{role} has {other.partitions} partitions but transactions has "
                f"{base.partitions}: they are co-partitioned by card_id and must match")
    return specs


def rename_specs(specs: Mapping[str, TopicSpec],
                 names: Mapping[str, str | None]) -> dict[str, TopicSpec]:
    """Apply topic-name overrides by role; None or a missing role keeps the spec's name."""
    out = dict(specs)
    for role, name in names.items():
        if name and role in out:
            out[role] = out[role].renamed(name)
    return out


def load_schema(role: str, topics_dir: Path | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a role's message value."""
    path = (topics_dir or TOPICS_DIR) / f"{role}.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time with an offset; jsonschema only checks it with an optional extra."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper())  # raises ValueError for 2025-02-30 and friends
    return True


def schema_validator(role: str, topics_dir: Path | None = None) -> Draft202012Validator:
    """A validator for a role's schema that also checks `format: date-time`."""
    return Draft202012Validator(load_schema(role, topics_dir), format_checker=FORMAT_CHECKER)


@dataclass
class ApplyReport:
    """What `stream topics apply` did: created, already as specified, or drifted (not changed)."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drifted: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.drifted

    def lines(self) -> list[str]:
        out = [f"created    {name}" for name in self.created]
        out += [f"unchanged  {name}" for name in self.unchanged]
        out += [f"DRIFT      {name}: {why}" for name, why in self.drifted.items()]
        if self.drifted:
            out.append("drift is reported, never changed: fix the topic by hand or the spec")
        return out


def _create(admin: Any, specs: list[TopicSpec]) -> tuple[list[str], list[str]]:
    """Create topics; return (created, already existing). Races with another creator are fine."""
    request = {s.name: {"num_partitions": s.partitions,
                        "replication_factor": s.replication_factor,
                        "configs": dict(s.config)} for s in specs}
    result = admin.create_topics(request, raise_errors=False)
    created, existing, errors = [], [], []
    for topic in result.get("topics", []):
        code = topic.get("error_code", 0)
        if code == 0:
            created.append(topic["name"])
        elif code == _TOPIC_ALREADY_EXISTS:
            existing.append(topic["name"])
        else:
            errors.append(f"{topic['name']}: error {code} {topic.get('error_message') or ''}")
    if errors:
        raise TopicApplyError("could not create topics: " + "; ".join(errors))
    if created:
        admin.wait_for_topics(created, timeout_ms=30000)
    return created, existing


def _drift(admin: Any, specs: list[TopicSpec]) -> dict[str, str]:
    """Reasons, by topic name, why an existing topic differs from its spec."""
    from kafka.admin import ConfigResource, ConfigResourceType

    if not specs:
        return {}
    described = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name, list(s.config))
                 for s in specs if s.config]
    configs: dict[str, dict[str, Any]] = {}
    if resources:
        configs = admin.describe_configs(resources, config_filter="all").get("topic", {})
    drift: dict[str, str] = {}
    for spec in specs:
        reasons = []
        partitions = described.get(spec.name, {}).get("partitions") or []
        if len(partitions) != spec.partitions:
            reasons.append(f"{len(partitions)} partitions, spec says {spec.partitions}")
        replicas = max((len(p.get("replica_nodes") or []) for p in partitions), default=0)
        if partitions and replicas and replicas != spec.replication_factor:
            reasons.append(f"replication factor {replicas}, spec says {spec.replication_factor}")
        actual = configs.get(spec.name, {})
        for key, want in spec.config.items():
            entry = actual.get(key)
            have = entry.get("value") if isinstance(entry, dict) else None
            if have != want:
                reasons.append(f"{key}={have}, spec says {want}")
        if reasons:
            drift[spec.name] = "; ".join(reasons)
    return drift


def apply_topics(admin: Any, specs: Iterable[TopicSpec]) -> ApplyReport:
    """Create missing topics and report drift of existing ones. Idempotent.

    `admin` is a `kafka.admin.KafkaAdminClient`.
    """
    wanted = list(specs)
    existing = set(admin.list_topics())
    missing = [s for s in wanted if s.name not in existing]
    created, raced = _create(admin, missing) if missing else ([], [])
    to_check = [s for s in wanted if s.name in existing or s.name in raced]
    drift = _drift(admin, to_check)
    report = ApplyReport(created=created, drifted=drift)
    report.unchanged = [s.name for s in to_check if s.name not in drift]
    return report


def missing_topics(admin: Any, names: Iterable[str]) -> list[str]:
    """The given topic names that do not exist, in the order given (start-up check)."""
    existing = set(admin.list_topics())
    return [name for name in names if name not in existing]
