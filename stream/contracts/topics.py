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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from stream.errors import ConfigError

TOPICS_DIR = Path(__file__).resolve().parents[2] / "topics"
ROLES = ("transactions", "labels", "verdicts", "transactions.dlq", "transactions.changelog",
         "transactions.merchant-feed", "transactions.merchant-images")
# The changelog, the merchant feed and its images are internal topics: each role keeps the
# spec file's name, while its topic is named per application (`Settings.internal_topic`,
# through `Settings.topic_names()`).
# Roles keyed by card_id whose partition N must line up with partition N of `transactions`.
CO_PARTITIONED = ("labels", "transactions.changelog", "transactions.merchant-feed")


class TopicSpecError(ConfigError):
    """A spec file in `topics/` is malformed or inconsistent."""


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


def specs_for(topic_names: Mapping[str, str], topics_dir: Path | None = None) -> list[TopicSpec]:
    """Every topic spec, named as configured (`Settings.topic_names()`)."""
    return list(rename_specs(load_specs(topics_dir), topic_names).values())


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
