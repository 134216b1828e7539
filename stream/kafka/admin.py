"""Topics as code against a real cluster: create what is missing, report drift, never change
an existing topic behind its owner's back. Works with either client's Admin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stream.contracts.topics import TopicSpec
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Admin


class TopicApplyError(InfrastructureError):
    """The broker refused to create a topic (bad config, not authorised, ...)."""


@dataclass
class ApplyReport:
    """What `stream topics apply` did: created, already as specified, or drifted (not changed).

    >>> report = ApplyReport(created=["verdicts"], drifted={"labels": "2 partitions"})
    >>> report.lines()[:2], report.ok
    (['created    verdicts', 'DRIFT      labels: 2 partitions'], False)
    """

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


def _create(admin: Admin, specs: list[TopicSpec]) -> tuple[list[str], list[str]]:
    """Create topics; return (created, already existing). Races with another creator are fine."""
    result = admin.create_topics({s.name: (s.partitions, s.replication_factor, s.config)
                                  for s in specs})
    created = [name for name, error in result.items() if error is None]
    existing = [name for name, error in result.items() if error == "already exists"]
    errors = [f"{name}: {error}" for name, error in result.items()
              if error is not None and error != "already exists"]
    if errors:
        raise TopicApplyError("could not create topics: " + "; ".join(errors))
    return created, existing


def _drift(admin: Admin, specs: list[TopicSpec]) -> dict[str, str]:
    """Reasons, by topic name, why an existing topic differs from its spec."""
    if not specs:
        return {}
    partitions = admin.topics()
    replication = admin.replication_factors([s.name for s in specs])
    configs = admin.topic_configs([s.name for s in specs if s.config])
    drift: dict[str, str] = {}
    for spec in specs:
        reasons = []
        have = partitions.get(spec.name, 0)
        if have != spec.partitions:
            reasons.append(f"{have} partitions, spec says {spec.partitions}")
        replicas = replication.get(spec.name, 0)
        if replicas and replicas != spec.replication_factor:
            reasons.append(f"replication factor {replicas}, spec says {spec.replication_factor}")
        actual = configs.get(spec.name, {})
        for key, want in spec.config.items():
            if actual.get(key) != want:
                reasons.append(f"{key}={actual.get(key)}, spec says {want}")
        if reasons:
            drift[spec.name] = "; ".join(reasons)
    return drift


def apply_topics(admin: Admin, specs: Iterable[TopicSpec]) -> ApplyReport:
    """Create missing topics and report drift of existing ones. Idempotent."""
    wanted = list(specs)
    try:
        existing = set(admin.topics())
        missing = [s for s in wanted if s.name not in existing]
        created, raced = _create(admin, missing) if missing else ([], [])
        to_check = [s for s in wanted if s.name in existing or s.name in raced]
        drift = _drift(admin, to_check)
    except ClientError as exc:
        raise InfrastructureError(f"topic management failed: {exc}") from None
    report = ApplyReport(created=created, drifted=drift)
    report.unchanged = [s.name for s in to_check if s.name not in drift]
    return report


def missing_topics(admin: Admin, names: Iterable[str]) -> list[str]:
    """The given topic names that do not exist, in the order given (start-up check)."""
    try:
        existing = set(admin.topics())
    except ClientError as exc:
        raise InfrastructureError(f"cannot list topics: {exc}") from None
    return [name for name in names if name not in existing]
