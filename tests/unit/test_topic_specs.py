"""The topic specs and schemas in `topics/` load, agree with each other, and mean something."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from keys_support import KEY

from stream.contracts.messages import Transaction
from stream.contracts.topics import (
    ROLES,
    TOPICS_DIR,
    TopicSpecError,
    load_schema,
    load_specs,
    rename_specs,
    schema_validator,
)
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.state.changelog import (
    CARD,
    LEARNED_FRONT,
    LEARNED_SEGMENT,
    MERCHANT,
    MODEL_KEY,
    PENDING,
    RECENT_FRONT,
    RECENT_SEGMENT,
    encode_changes,
)
from stream.state.snapshot import MAGIC as SNAPSHOT_MAGIC
from stream.state.snapshot import read_header


def example(role: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((TOPICS_DIR / f"{role}.example.json").read_text())
    return value


def test_every_role_has_a_spec_a_schema_and_an_example() -> None:
    specs = load_specs()
    assert set(specs) == set(ROLES)
    for role in ROLES:
        assert (TOPICS_DIR / f"{role}.schema.json").is_file()
        assert (TOPICS_DIR / f"{role}.example.json").is_file()


def test_specs_have_the_agreed_shape() -> None:
    specs = load_specs()
    for role, spec in specs.items():
        assert spec.name == role and spec.role == role
        assert spec.replication_factor == 1
        assert spec.key, f"{role}: key description missing"
        assert spec.config["cleanup.policy"] in ("delete", "compact")
        assert all(isinstance(v, str) for v in spec.config.values())
    assert specs["transactions"].partitions == 4
    assert specs["labels"].partitions == specs["transactions"].partitions
    assert specs["transactions.changelog"].partitions == specs["transactions"].partitions
    assert specs["transactions.changelog"].config["cleanup.policy"] == "compact"
    assert specs["transactions.dlq"].partitions >= 1


def test_renamed_keeps_everything_but_the_name() -> None:
    spec = load_specs()["transactions"]
    other = spec.renamed("tx-test")
    assert other.name == "tx-test" and spec.name == "transactions"
    assert (other.partitions, other.config, other.role) == (spec.partitions, spec.config, spec.role)
    renamed = rename_specs(load_specs(), {"verdicts": "v2", "labels": None})
    assert renamed["verdicts"].name == "v2" and renamed["labels"].name == "labels"


def test_mismatched_co_partitioning_is_refused(tmp_path: Path) -> None:
    for role in ("transactions", "labels"):
        text = (TOPICS_DIR / f"{role}.toml").read_text()
        if role == "labels":
            text = text.replace("partitions = 4", "partitions = 3")
        (tmp_path / f"{role}.toml").write_text(text)
    with pytest.raises(TopicSpecError, match="co-partitioned"):
        load_specs(tmp_path)


def test_malformed_spec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('name = "x"\npartitions = 0\n')
    with pytest.raises(TopicSpecError, match="partitions"):
        load_specs(tmp_path)


@pytest.mark.parametrize("role", ROLES)
def test_schema_is_valid_2020_12_and_example_validates(role: str) -> None:
    schema = load_schema(role)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    schema_validator(role).check_schema(schema)
    errors = list(schema_validator(role).iter_errors(example(role)))
    assert not errors, [e.message for e in errors]


def _with(role: str, **changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(example(role))
    for key, new in changes.items():
        if new is _DROP:
            value.pop(key, None)
        else:
            value[key] = new
    return value


_DROP = object()

GOOD = [
    ("transactions", {"timestamp": 1736944496789}),
    ("transactions", {"timestamp": "2025-01-15T12:34:56+01:00"}),
    ("transactions", {"is_fraud": 1}),
    ("transactions", {"is_fraud": None}),
    ("transactions", {"amount": 0}),
    ("transactions", {"unknown_extra": {"kept": True}}),
    ("transactions", {"currency": _DROP, "mcc": _DROP, "is_fraud": _DROP}),
    ("labels", {"is_fraud": 0}),
    ("labels", {"timestamp": "2025-01-22T08:00:00Z"}),
    ("verdicts", {"challengers": _DROP, "contributions": _DROP}),
    ("verdicts", {"score": 1.0, "decision": "decline"}),
    ("verdicts", {"model_state": "warming", "score": 0.5, "decision": "approve"}),
    ("verdicts", {"model_state": _DROP}),  # verdicts written before the field: read as ready
    ("transactions.dlq", {"payload": _DROP, "payload_b64": "/wA="}),
    ("transactions.dlq", {"payload": None, "key": _DROP, "headers": _DROP}),
]

BAD = [
    ("transactions", {"transaction_id": _DROP}),
    ("transactions", {"card_id": ""}),
    ("transactions", {"merchant_id": 17}),
    ("transactions", {"amount": -1}),
    ("transactions", {"amount": "12.50"}),
    ("transactions", {"amount": float("inf")}),
    ("transactions", {"timestamp": "yesterday"}),
    ("transactions", {"timestamp": "2025-01-15T12:34:56"}),  # no offset
    ("transactions", {"timestamp": "2025-02-30T12:00:00Z"}),
    ("transactions", {"timestamp": 1.5}),
    ("transactions", {"timestamp": -5}),
    ("transactions", {"timestamp": True}),
    ("transactions", {"is_fraud": 2}),
    ("transactions", {"is_fraud": "yes"}),
    ("labels", {"is_fraud": _DROP}),
    ("labels", {"is_fraud": None}),
    ("labels", {"transaction_id": ""}),
    ("verdicts", {"score": 1.2}),
    ("verdicts", {"score": -0.01}),
    ("verdicts", {"decision": "maybe"}),
    ("verdicts", {"scored_at": 1736944496}),
    ("verdicts", {"scored_at": "not a time"}),
    ("verdicts", {"latency_ms": -3}),
    ("verdicts", {"model_version": _DROP}),
    ("verdicts", {"challengers": {"m": "high"}}),
    ("verdicts", {"model_state": "cold"}),
    ("transactions.dlq", {"reason": _DROP}),
    ("transactions.dlq", {"reason": "Not A Code"}),
    ("transactions.dlq", {"payload": _DROP}),
    ("transactions.dlq", {"payload_b64": "AAAA"}),  # both payload and payload_b64
    ("transactions.dlq", {"source": {"topic": "transactions", "partition": 0}}),
    ("transactions.dlq", {"source": {"topic": "t", "partition": -1, "offset": 3}}),
]


@pytest.mark.parametrize(("role", "changes"), GOOD)
def test_schema_accepts_valid_variants(role: str, changes: dict[str, Any]) -> None:
    errors = list(schema_validator(role).iter_errors(_with(role, **changes)))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(("role", "changes"), BAD)
def test_schema_rejects_bad_values(role: str, changes: dict[str, Any]) -> None:
    assert not schema_validator(role).is_valid(_with(role, **changes))


@pytest.mark.parametrize("role", [r for r in ROLES if r != "transactions.changelog"])
def test_schema_rejects_non_objects(role: str) -> None:
    for value in ([], "x", 1, None):
        assert not schema_validator(role).is_valid(value)


# -- the changelog: values are rows whose kind the record key gives (stream/state/changelog.py)

def _changelog_validator(kind: str) -> Draft202012Validator:
    """The schema's definition of one kind of value (`card`, `merchant`, `pending`,
    `snapshot_header`), as a validator."""
    schema = load_schema("transactions.changelog")
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{kind}"})


def _changelog_records() -> list[tuple[bytes, bytes | None]]:
    """What checkpoints write for a partition that scored, deferred labels and evicted: the
    real encoder's output, every key kind and tombstones included."""
    config = PipelineConfig(label_delay_s=600.0, track_changes=True, state_key=KEY,
                            card_ttl_s=2000.0, evict_every=25)
    pipeline = Pipeline(config)
    records: list[tuple[bytes, bytes | None]] = []
    for i in range(200):
        card = f"c{i % 17}" if i < 100 else f"d{i % 5}"
        pipeline.score(Transaction(f"t{i}", card, f"m{i % 7}", 3.0 + i % 40, 1.767e9 + i * 53.0,
                                   i % 11 == 0), 0)
        if i % 40 == 39:
            records += encode_changes(pipeline.drain_changes(0))
    return records


def test_the_changelog_schema_describes_every_record_the_code_writes() -> None:
    kinds = {CARD: "card", MERCHANT: "merchant", PENDING: "pending",
             RECENT_SEGMENT: "recent_segment", LEARNED_SEGMENT: "learned_segment",
             RECENT_FRONT: "front", LEARNED_FRONT: "front"}
    whole = schema_validator("transactions.changelog")
    seen: set[str] = set()
    for key, value in _changelog_records():
        if key == MODEL_KEY:
            assert value is not None and value.startswith(SNAPSHOT_MAGIC)
            errors = list(_changelog_validator("snapshot_header").iter_errors(read_header(value)))
            seen.add("model")
        elif value is None:
            assert key[:2] in kinds  # tombstones delete rows and segments, never the model
            seen.add("tombstone")
            continue
        else:
            kind = kinds[key[:2]]
            document = json.loads(value)
            errors = list(_changelog_validator(kind).iter_errors(document))
            errors += list(whole.iter_errors(document))
            seen.add(kind)
        assert not errors, (key, [e.message for e in errors])
    assert seen == {"model", "tombstone", "card", "merchant", "pending", "recent_segment",
                    "learned_segment", "front"}


@pytest.mark.parametrize(("kind", "value"), [
    ("card", [1.767e9, 1.0, 5.0, 0.0, 4096.0, 0.0, 0.0, 1.0, 5.0]),
    ("merchant", [1.767e9, 1.767e9, 0.5, 0.9, 1.767e9, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]),
    ("pending", ["m1", 1.767e9, 0.12, [0.1, 2.0]]),
    ("recent", [17, 1.767e9, 0.12, "approve", "ready"]),
    ("learned", [4, 1.767e9, True, "m1", 1.767e9, [0.1, 2.0]]),
])
def test_the_changelog_schema_accepts_each_kind(kind: str, value: Any) -> None:
    assert _changelog_validator(kind).is_valid(value)
    assert schema_validator("transactions.changelog").is_valid(value)


@pytest.mark.parametrize("value", [
    {"kind": "card", "partition": 2, "written_at": "2025-01-15T12:35:00.000Z"},  # no envelope
    [],
    [1.5, 2.0],  # too short for a card, not a merchant, not a view (its sequence is an integer)
    [1.767e9, 1.0, "5", 0.0, 1.0, 5.0],
    [1.767e9, 1.767e9, 0.5, 0.0, 1.0, 9.0, 9.0, 9.0, "x"],
    ["m1", 1.767e9, 1.5, [0.1]],  # score outside [0, 1]
    ["", 1.767e9, 0.5, [0.1]],
    ["m1", 1.767e9, 0.5, [0.1], "extra"],
    [17, 1.767e9, 0.12, "allow", "ready"],  # not a decision
    [4, 1.767e9, 1, "m1", 1.767e9, [0.1]],  # is_fraud must be a boolean
    {"t1": [17, 1.767e9, 0.12, "allow", "ready"]},  # a segment of something else
    "x", -1, 1.5, None,  # a front is a sequence number
])
def test_the_changelog_schema_rejects_other_values(value: Any) -> None:
    assert not schema_validator("transactions.changelog").is_valid(value)
