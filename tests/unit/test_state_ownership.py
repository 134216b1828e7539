"""Internal topics are named per application, and a scorer restores only its own state
(issue 12): the naming, the stamp on every changelog record, the ownership check on restore
and the takeover (`adopt_state_from`), without a broker."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from changelog_support import ChangelogClients
from keys_support import KEY
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.cli import main
from stream.config import Settings, load_settings
from stream.contracts.codec import decode_transaction
from stream.contracts.topics import specs_for
from stream.core.pipeline import Pipeline
from stream.devtools.synthetic import TrafficConfig, generate
from stream.errors import ConfigError, FraudStreamError, InfrastructureError
from stream.kafka.records import Record
from stream.kafka.testing import MemoryConsumer
from stream.observability.metrics import Metrics
from stream.serving import wiring
from stream.serving.checkpoint import Checkpointer
from stream.serving.intake import Intake
from stream.serving.ledger import Ledger
from stream.serving.recovery import Recovery
from stream.state.changelog import (
    OWNER_KEY,
    ForeignStateError,
    Ownership,
    RestoredState,
    check_ownership,
    encode_changes,
    fold,
    owner_record,
    stamp,
    writer_of,
)

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "state.changelog"


# -- naming --------------------------------------------------------------------------------------
def test_the_application_defaults_to_the_group_and_names_the_changelog() -> None:
    default = load_settings(environ={})
    assert (default.group_id, default.application_id) == ("fraud-stream", "fraud-stream")
    assert default.changelog_topic == "fraud-stream.changelog"
    assert default.topic_names()["transactions.changelog"] == "fraud-stream.changelog"
    staging = load_settings(environ={"FRAUDSTREAM_GROUP_ID": "staging"})
    assert staging.changelog_topic == "staging.changelog" == staging.internal_topic("changelog")
    blue = load_settings(environ={}, group_id="fraud-stream", application_id="fraud-stream-v2")
    assert blue.group_id == "fraud-stream"  # the consumer group stays the group
    assert blue.changelog_topic == "fraud-stream-v2.changelog"
    assert blue.internal_topic("merchant-feed") == "fraud-stream-v2.merchant-feed"


def test_an_explicit_changelog_topic_still_wins(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[topics]\nchangelog_topic = "transactions.changelog"\n'
                    'application_id = "payments"\n')
    kept = load_settings(toml, environ={})
    assert kept.changelog_topic == "transactions.changelog"
    assert kept.application_id == "payments"
    assert kept.topic_names()["transactions.changelog"] == "transactions.changelog"
    flag = load_settings(toml, environ={}, changelog_topic="other.changelog")
    assert flag.changelog_topic == "other.changelog"


def test_a_copy_keeps_the_derived_names() -> None:
    settings = load_settings(environ={}, group_id="exp-1")
    copy = settings.model_copy(update={"max_events": 5})
    assert copy.changelog_topic == "exp-1.changelog" and copy.application_id == "exp-1"
    assert Settings(**settings.model_dump()).changelog_topic == "exp-1.changelog"


@pytest.mark.parametrize(("flags", "message"), [
    ({"group_id": "my group"}, "group_id .*'my group' cannot name internal topics"),
    ({"application_id": "a/b"}, "application_id 'a/b' cannot name internal topics"),
    ({"application_id": "x" * 201}, "cannot name internal topics"),
    ({"adopt_state_from": "fraud-stream"}, "adopt_state_from names this application itself"),
])
def test_bad_application_settings_are_one_clear_error(flags: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, **flags)


def test_topics_apply_creates_the_application_changelog() -> None:
    """`stream topics apply` creates what `specs_for(settings.topic_names())` lists."""
    specs = {s.role: s for s in specs_for(load_settings(environ={}, group_id="exp").topic_names())}
    changelog = specs["transactions.changelog"]
    assert changelog.name == "exp.changelog"
    assert changelog.config["cleanup.policy"] == "compact"
    assert changelog.partitions == specs["transactions"].partitions
    assert specs["transactions"].name == "transactions"  # other topics are shared by name


def test_deployments_name_the_changelog_after_their_application(tmp_path: Path) -> None:
    """The k8s ConfigMap and docker compose (topics-init and the scorer alike) leave the
    changelog to the application id, so `topics apply` and the scorer agree on it."""
    configmap = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    path = tmp_path / "config.toml"
    path.write_text(configmap["data"]["config.toml"])
    # The deployment adds the password from its Secret (FRAUDSTREAM_SASL_PLAIN_PASSWORD).
    k8s = load_settings(path, environ={"FRAUDSTREAM_SASL_PLAIN_PASSWORD": "from-the-secret"})
    assert k8s.changelog_topic == k8s.internal_topic("changelog") == "fraud-stream.changelog"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    envs = [{k: str(v) for k, v in compose[name]["environment"].items()}
            for name in ("topics-init", "scorer")]
    assert envs[0] == envs[1]
    assert load_settings(environ=envs[1]).changelog_topic == "fraud-stream.changelog"


# -- the stamp and the ownership check (pure) --------------------------------------------------
def _events(count: int, seed: int = 3) -> list[dict[str, Any]]:
    return list(generate(TrafficConfig(count=count, fraud_rate=0.05, seed=seed, n_cards=40)))


def _changes(count: int) -> list[tuple[bytes, bytes | None]]:
    pipe = Pipeline(pipeline_config(load_settings(environ={}, **PER_PARTITION), KEY))
    for event in _events(count):
        pipe.score(decode_transaction(orjson.dumps(event)), 0)
    return encode_changes(pipe.drain_changes(0))


def _folded(pairs: list[tuple[bytes, bytes | None]], writer: str | None) -> RestoredState:
    state = RestoredState()
    for key, value in pairs:
        fold(state, key, value, writer)
    return state


def test_every_record_names_its_writer() -> None:
    assert stamp("fraud-stream") == (("application_id", b"fraud-stream"),)
    assert writer_of([("trace", b"x"), ("application_id", b"green")]) == "green"
    assert writer_of([("application_id", None)]) is None
    pairs = _changes(50)
    state = _folded(pairs, "blue")
    assert state.writers == {"blue": len(pairs)} and state.unstamped == 0
    assert check_ownership(state, "blue", None, "t[0]") == Ownership()


def test_state_of_another_application_is_refused_naming_both_and_the_way_out() -> None:
    state = _folded(_changes(50), "fraud-stream")
    with pytest.raises(ForeignStateError) as refused:
        check_ownership(state, "staging", None, "changelog t[3]")
    message = str(refused.value)
    assert message.startswith("changelog t[3] holds state written by application "
                              "'fraud-stream' (")
    assert "this scorer is application 'staging'" in message
    assert 'adopt_state_from = "fraud-stream"' in message
    assert "--adopt-state-from fraud-stream" in message
    assert "'staging.changelog'" in message and "\n" not in message
    assert isinstance(refused.value, FraudStreamError) and refused.value.exit_code == 1


def test_a_mixed_changelog_is_refused_for_every_stranger() -> None:
    state = _folded(_changes(20), "mine")
    fold(state, b"c:x", b"[1.0]", "a")
    fold(state, b"c:y", b"[1.0]", "b")
    with pytest.raises(ForeignStateError, match=r"applications 'a' \(1 records\), 'b'"):
        check_ownership(state, "mine", None, "t[0]")
    with pytest.raises(ForeignStateError, match="application 'b'"):
        check_ownership(state, "mine", "a", "t[0]")  # adopting one is not adopting both


def test_rows_from_before_the_stamp_are_accepted_as_legacy() -> None:
    pairs = _changes(30)
    legacy = _folded(pairs, None)
    assert check_ownership(legacy, "anyone", None, "t[0]") == Ownership(legacy=len(pairs))
    for key, value in pairs:  # later checkpoints of the application that took it over
        fold(legacy, key, value, "anyone")
    assert check_ownership(legacy, "anyone", None, "t[0]").legacy == len(pairs)


def test_adopting_takes_the_state_over_once() -> None:
    state = _folded(_changes(30), "blue")
    taken = check_ownership(state, "green", "blue", "t[0]")
    assert taken == Ownership(adopting="blue", adopted=("blue",))
    key, value = owner_record("green", taken.adopted)
    assert key == OWNER_KEY
    fold(state, key, value, "green")
    assert state.adoptions == {"green": {"blue"}}
    # Recorded: later restores accept blue's rows untold, and the setting left in place
    # records nothing more.
    assert check_ownership(state, "green", None, "t[0]") == Ownership(adopted=("blue",))
    assert check_ownership(state, "green", "blue", "t[0]").adopting is None
    # Blue itself now finds green's rows, and is refused.
    with pytest.raises(ForeignStateError, match="application 'green'"):
        check_ownership(state, "blue", None, "t[0]")


def test_adopting_an_application_adopts_what_it_had_adopted() -> None:
    state = _folded(_changes(10), "blue")
    fold(state, b"c:g", b"[1.0]", "green")
    fold(state, *owner_record("green", ["blue"]), "green")
    taken = check_ownership(state, "red", "green", "t[0]")
    assert taken == Ownership(adopting="green", adopted=("blue", "green"))
    with pytest.raises(ForeignStateError, match="application 'green'"):
        check_ownership(state, "red", "blue", "t[0]")  # blue never adopted green


def test_nothing_to_adopt_records_nothing() -> None:
    assert check_ownership(RestoredState(), "green", "blue", "t[0]") == Ownership()
    mine = _folded(_changes(10), "green")
    assert check_ownership(mine, "green", "blue", "t[0]") == Ownership()


def test_the_cli_prints_a_refusal_as_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(settings: Settings, **_: Any) -> Any:  # run_scorer(settings, heap=...)
        check_ownership(RestoredState(writers={"fraud-stream": 3}), settings.application_id,
                        settings.adopt_state_from, f"changelog {settings.changelog_topic}[0]")

    monkeypatch.setattr(wiring, "run_scorer", refused)
    with pytest.raises(SystemExit) as exited:
        main(["run", "--group-id", "staging", "--changelog-topic", "fraud-stream.changelog"])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: changelog fraud-stream.changelog[0] holds state written by "
                          "application 'fraud-stream'")


# -- the scorer's side: checkpoints stamp, restores check (in-memory doubles) ----------------------
class _Delivery:
    """Records what is sent; commits nothing (the delivery guarantee is not under test)."""

    transactional = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, Any]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Any = None) -> None:
        self.sent.append((topic, key, value, partition, headers))

    def commit(self, offsets: Any, wait: bool = True) -> None:
        pass


def _settings(application: str, **extra: Any) -> Settings:
    return load_settings(environ={}, group_id="fraud-stream", application_id=application,
                         changelog_topic=TOPIC, **{**PER_PARTITION, **extra})


def _checkpointed(application: str, count: int) -> tuple[list[Record], Pipeline]:
    """A scorer of `application` scores `count` events on partition 0 and checkpoints: the
    changelog records it wrote, as a reader gets them back."""
    settings = _settings(application)
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings))
    for event in _events(count):
        pipeline.score(decode_transaction(orjson.dumps(event)), 0)
    delivery = _Delivery()
    Checkpointer(settings, pipeline, delivery, Ledger(),  # type: ignore[arg-type]
                 Metrics(CollectorRegistry())).commit()
    assert delivery.sent and {headers for *_, headers in delivery.sent} == {stamp(application)}
    records = [Record(topic, 0, offset, key, value, 0, headers)
               for offset, (topic, key, value, _, headers) in enumerate(delivery.sent)]
    return records, pipeline


def _recovery(settings: Settings, records: list[Record]) -> tuple[Recovery, Pipeline, _Delivery]:
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings))
    delivery = _Delivery()
    intake = Intake(MemoryConsumer(), settings.input_topic, settings.labels_topic, 1.0, 100)
    recovery = Recovery(settings, pipeline, ChangelogClients(records, TOPIC),  # type: ignore[arg-type]
                        MemoryConsumer(), delivery, Ledger(), intake,  # type: ignore[arg-type]
                        Metrics(CollectorRegistry()), threading.Event())
    return recovery, pipeline, delivery


def test_a_scorer_restores_its_own_state() -> None:
    records, written = _checkpointed("blue", 60)
    recovery, pipeline, delivery = _recovery(_settings("blue"), records)
    recovery.restore(0)
    assert pipeline.partitions[0].events == written.partitions[0].events == 60
    assert delivery.sent == []


def test_a_rewind_restores_an_assigned_partition_whose_restore_had_failed() -> None:
    """A restore that failed on assignment (e.g. a topic not yet readable) leaves the partition
    out of the pipeline; the rewind that follows restores every assigned partition, instead of
    letting scoring start it afresh (found when a just-created merchant feed answered "not
    leader" during the first assignment)."""
    records, _ = _checkpointed("blue", 60)
    settings = _settings("blue")
    recovery, pipeline, _ = _recovery(settings, records)
    consumer = recovery.consumer
    assert isinstance(consumer, MemoryConsumer)
    consumer.assigned = [(settings.input_topic, 0), (settings.labels_topic, 0)]
    assert pipeline.partitions == {}
    recovery.rewind()
    assert pipeline.partitions[0].events == 60


def test_a_scorer_refuses_another_applications_state_and_restores_nothing() -> None:
    records, _ = _checkpointed("blue", 60)
    recovery, pipeline, delivery = _recovery(_settings("green"), records)
    with pytest.raises(ForeignStateError, match=f"changelog {TOPIC}\\[0\\] holds state written "
                       "by application 'blue'.*application 'green'"):
        recovery.restore(0)
    assert 0 not in pipeline.partitions and delivery.sent == []


def test_a_takeover_restores_and_is_recorded_with_the_next_checkpoint() -> None:
    records, _ = _checkpointed("blue", 60)
    recovery, pipeline, delivery = _recovery(_settings("green", adopt_state_from="blue"),
                                             records)
    recovery.restore(0)
    assert pipeline.partitions[0].events == 60
    (sent,) = delivery.sent
    assert sent == (TOPIC, OWNER_KEY, orjson.dumps({"app": "green", "adopted": ["blue"]}), 0,
                    stamp("green"))
    assert 0 in pipeline.dirty  # so a checkpoint is due and commits the record
    # Once recorded, green restores without the setting, and records nothing more.
    recorded = [*records, Record(TOPIC, 0, len(records), sent[1], sent[2], 0, sent[4])]
    again, restored, quiet = _recovery(_settings("green"), recorded)
    again.restore(0)
    assert restored.partitions[0].events == 60 and quiet.sent == []


def test_legacy_rows_are_restored_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    records, _ = _checkpointed("blue", 40)
    legacy = [Record(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    recovery, pipeline, _ = _recovery(_settings("green"), legacy)
    with caplog.at_level(logging.INFO, logger="stream.serving"):
        recovery.restore(0)
        recovery.restore(0)
    assert pipeline.partitions[0].events == 40
    noted = [r.getMessage() for r in caplog.records if "without an application stamp" in
             r.getMessage()]
    assert len(noted) == 1 and "legacy" in noted[0] and "'green'" in noted[0]


class _Topics:
    def __init__(self, existing: dict[str, int]) -> None:
        self.existing = existing

    def topic_partitions(self, timeout_s: float) -> dict[str, int]:
        return self.existing


def test_a_missing_changelog_says_how_to_create_the_applications_own() -> None:
    settings = load_settings(environ={}, group_id="exp-1")
    present = {name: 4 for name in settings.topic_names().values()}
    present.pop("exp-1.changelog")
    with pytest.raises(InfrastructureError) as missing:
        wiring.check_topics(_Topics(present), settings)  # type: ignore[arg-type]
    assert str(missing.value) == (
        "topic(s) missing: exp-1.changelog; create them with `stream topics apply` (the "
        "changelog is named after the application, 'exp-1': `stream topics apply "
        "--application-id exp-1`)")
    explicit = load_settings(environ={}, changelog_topic="mine.changelog")
    with pytest.raises(InfrastructureError, match=r"mine.changelog; create them with "
                       r"`stream topics apply`$"):
        wiring.check_topics(_Topics(present), explicit)  # type: ignore[arg-type]
