"""The cold start's rules (stream/core/scoring/warmup.py), their settings, and their count on
the scorer's metrics."""

from __future__ import annotations

import math

import orjson
import pytest
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import pipeline_config
from stream.config import load_settings
from stream.contracts.codec import DecodeError
from stream.contracts.messages import Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.policy import Policy
from stream.core.scoring.warmup import Warmup
from stream.errors import ConfigError
from stream.kafka.records import Record
from stream.observability.metrics import Metrics
from stream.serving.handlers import RecordHandler
from stream.serving.intake import Arrival
from stream.serving.ledger import Ledger

POLICY = Policy(0.2, 0.6)


def test_ready_after_exactly_the_configured_labels() -> None:
    warmup = Warmup(labels=3)
    assert [warmup.state(n) for n in range(5)] == ["warming"] * 3 + ["ready"] * 2
    assert Warmup(labels=0).state(0) == "ready"  # 0 turns the warm-up off


def test_without_rules_the_fallback_approves_everything() -> None:
    warmup = Warmup(labels=10)
    assert {warmup.fallback(amount) for amount in (0.0, 12.5, 1e6, 1e300)} == {"approve"}


@pytest.mark.parametrize(
    ("amount", "decision"),
    [(0.0, "approve"), (999.99, "approve"), (1000.0, "review"), (4999.0, "review"),
     (5000.0, "decline"), (1e9, "decline")],
)
def test_amount_rules_are_inclusive_on_their_lower_bound(amount: float, decision: str) -> None:
    assert Warmup(10, review_amount=1000.0, decline_amount=5000.0).fallback(amount) == decision


def test_each_rule_works_alone_and_equal_amounts_disable_review() -> None:
    assert [Warmup(10, review_amount=100.0).fallback(a) for a in (99.0, 100.0, 1e9)] == [
        "approve", "review", "review"]
    assert [Warmup(10, decline_amount=100.0).fallback(a) for a in (99.0, 100.0)] == [
        "approve", "decline"]
    both = Warmup(10, review_amount=100.0, decline_amount=100.0)
    assert {both.fallback(a) for a in (1.0, 99.9, 100.0, 500.0)} == {"approve", "decline"}


def test_while_warming_the_score_does_not_decide() -> None:
    warmup = Warmup(labels=5, review_amount=1000.0)
    for score in (0.0, 0.5, 0.99):
        assert warmup.decide(POLICY, score, 10.0, learned=4) == ("approve", "warming")
        assert warmup.decide(POLICY, score, 2000.0, learned=4) == ("review", "warming")
    # Once ready, the score policy decides whatever the amount.
    assert warmup.decide(POLICY, 0.99, 10.0, learned=5) == ("decline", "ready")
    assert warmup.decide(POLICY, 0.01, 2000.0, learned=5) == ("approve", "ready")
    assert warmup.decide(POLICY, 0.5, 10.0, learned=5) == ("review", "ready")


@pytest.mark.parametrize("kwargs", [
    {"labels": -1}, {"review_amount": -0.01}, {"decline_amount": -5.0},
    {"review_amount": math.nan}, {"review_amount": 10.0, "decline_amount": 5.0},
])
def test_inconsistent_rules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Warmup(**kwargs)  # type: ignore[arg-type]


# -- settings ----------------------------------------------------------------------------------
def test_settings_defaults_match_the_core_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.warmup_labels, settings.warmup_review_amount,
            settings.warmup_decline_amount) == (500, None, None)
    assert pipeline_config(settings).warmup == Warmup() == PipelineConfig().warmup


def test_settings_reach_the_core_from_the_environment() -> None:
    settings = load_settings(environ={"FRAUDSTREAM_WARMUP_LABELS": "50",
                                      "FRAUDSTREAM_WARMUP_REVIEW_AMOUNT": "1000",
                                      "FRAUDSTREAM_WARMUP_DECLINE_AMOUNT": "7500.5"})
    assert pipeline_config(settings).warmup == Warmup(50, 1000.0, 7500.5)
    assert pipeline_config(load_settings(environ={}, warmup_labels=0)).warmup.labels == 0


@pytest.mark.parametrize("flags", [
    {"warmup_labels": -1}, {"warmup_review_amount": -1.0},
    {"warmup_review_amount": 500.0, "warmup_decline_amount": 100.0},
])
def test_bad_warmup_settings_are_one_config_error(flags: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="warmup"):
        load_settings(environ={}, **flags)


# -- the scorer's count ------------------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: object = None) -> None:
        self.sent.append((topic, value))


def _arrival(i: int, amount: float, fraud: bool | None) -> Arrival:
    tx = Transaction(f"t{i}", f"c{i % 3}", "m1", amount, 1_700_000_000.0 + i, fraud)
    record = Record("transactions", 0, i, tx.card_id.encode(), b"{}", 1_700_000_000_000)
    return Arrival(record, tx, tx.timestamp, 0.0)


def test_the_handler_counts_warming_decisions_and_verdicts_say_so() -> None:
    settings = load_settings(environ={}, warmup_labels=4, warmup_decline_amount=900.0,
                             **PER_PARTITION)
    registry = CollectorRegistry()
    sink = _Sink()
    handler = RecordHandler(settings, Pipeline(pipeline_config(settings)), Metrics(registry),
                            sink, Ledger(), co_partitioned_output=False)

    def count(name: str, decision: str) -> float:
        value = registry.get_sample_value(name, {"decision": decision})
        assert value is not None, (name, decision)  # every decision is exported from zero
        return value

    assert [count("fraudstream_warming_decisions_total", d)
            for d in ("approve", "review", "decline")] == [0.0, 0.0, 0.0]
    amounts = [10.0, 950.0, 10.0, 20.0, 30.0, 40.0, 950.0, 10.0]
    for i, amount in enumerate(amounts):
        handler.transaction(_arrival(i, amount, fraud=i % 2 == 0))
    handler.transaction(Arrival(Record("transactions", 0, 99, None, b"x"),
                                DecodeError("invalid_json", "bad"), -math.inf, 0.0))
    handler.flush_metrics()  # as the loop does after each poll's records
    bodies = [orjson.loads(value or b"") for topic, value in sink.sent
              if topic == settings.output_topic]
    # Labels inside the events: events 0-3 are scored with 0-3 labels learned (warming).
    assert [b["model_state"] for b in bodies] == ["warming"] * 4 + ["ready"] * 4
    assert [b["decision"] for b in bodies[:4]] == ["approve", "decline", "approve", "approve"]
    assert count("fraudstream_warming_decisions_total", "approve") == 3
    assert count("fraudstream_warming_decisions_total", "decline") == 1
    assert count("fraudstream_warming_decisions_total", "review") == 0
    verdicts = sum(count("fraudstream_verdicts_total", d) for d in ("approve", "review",
                                                                     "decline"))
    assert verdicts == len(amounts)  # warming decisions are verdicts too
