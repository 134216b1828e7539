"""The pipeline acts on the evaluation layer: challengers in shadow, promotion, drift, the
"no chargeback within N days" rule, and honest delayed-label joins."""

from __future__ import annotations

import logging
import math
import random

import pytest
from prometheus_client import CollectorRegistry

from stream.contracts.messages import Label, Transaction
from stream.core.evaluation.oversight import OversightConfig
from stream.core.evaluation.shadow import PromotionRule
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.model import ModelSpec, learn_one, score_one
from stream.core.scoring.zoo import make_challenger, parse_challenger
from stream.observability.metrics import Metrics
from stream.observability.quality import QualityGauges

T0 = 1_700_000_000.0


def _traffic(n: int, seed: int = 0) -> list[Transaction]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fraud = rng.random() < 0.05
        amount = rng.uniform(300, 900) if fraud else rng.uniform(5, 80)
        out.append(Transaction(f"t{i}", f"c{rng.randrange(40)}", f"m{rng.randrange(10)}",
                               amount, T0 + i * 60.0, fraud))
    return out


def test_challengers_score_in_shadow_and_learn_from_the_same_labels() -> None:
    config = PipelineConfig(oversight=OversightConfig(challengers=("logreg-adam-lr0.01", "gnb")))
    pipe, plain = Pipeline(config), Pipeline(PipelineConfig())
    events = _traffic(400)
    for tx in events:
        scored, reference = pipe.score(tx, 0), plain.score(tx, 0)
        # Challengers never decide: the champion's score and decision are untouched.
        assert (scored.score, scored.decision) == (reference.score, reference.decision)
        assert set(scored.challengers) == {"logreg-adam-lr0.01", "gnb"}
    # A challenger learned exactly what a stand-alone copy learns from the same features.
    from stream.core.pipeline import PartitionState

    features = PartitionState(0, PipelineConfig()).features
    twin = make_challenger(parse_challenger("logreg-adam-lr0.01"))
    for tx in events:
        x = features.extract(tx)
        learn_one(twin, x, bool(tx.is_fraud))
        features.learn_label(tx.merchant_id, bool(tx.is_fraud), tx.timestamp, tx.card_id)
    probe = features.extract(Transaction("p", "c1", "m1", 500.0, T0 + 1e6))
    assert score_one(twin, probe) == score_one(
        pipe.partitions[0].challengers["logreg-adam-lr0.01"], probe)
    comparison = pipe.oversight.challengers()
    assert comparison["gnb"].decisions == 400 and comparison["gnb"].metrics.labels == 400
    assert 0.0 <= comparison["logreg-adam-lr0.01"].agreement <= 1.0


def test_a_better_challenger_is_promoted_and_the_verdict_says_so() -> None:
    rule = PromotionRule("roc_auc", margin=0.0001, min_labels=300)
    # The champion barely learns (tiny learning rate); the challenger learns fast.
    oversight = OversightConfig(challengers=("logreg-lr0.1",), promotion=rule,
                                promotion_check_every=50)
    config = PipelineConfig(model=ModelSpec(learning_rate=1e-6, intercept_lr=1e-6),
                            oversight=oversight)
    pipe = Pipeline(config, "slow@1")
    versions = []
    for tx in _traffic(1500, seed=3):
        pipe.score(tx, 0)
        versions.append(pipe.model_version)
    assert pipe.oversight.promotions, "the better challenger was never promoted"
    promotion = pipe.oversight.promotions[0]
    assert promotion.challenger == "logreg-lr0.1" and promotion.champion == "slow@1"
    assert promotion.labels >= 300
    assert versions[0] == "slow@1" and versions[-1] == "logreg-lr0.1"
    # The old champion keeps running in shadow under its own name.
    assert set(pipe.partitions[0].challengers) == {"slow@1"}
    assert set(pipe.oversight.challengers()) == {"slow@1"}


def test_no_promotion_without_a_rule() -> None:
    config = PipelineConfig(oversight=OversightConfig(challengers=("logreg-lr0.1",)))
    pipe = Pipeline(config, "champ")
    for tx in _traffic(800):
        pipe.score(tx, 0)
    assert pipe.oversight.promotions == [] and pipe.model_version == "champ"


def test_drift_is_detected_and_recorded_with_partition_and_event_time() -> None:
    # Warm-up past the cold model's fast-moving scores, so the reference is its settled ones.
    config = PipelineConfig(oversight=OversightConfig(psi_reference=300, psi_window=300,
                                                      psi_warmup=600))
    pipe = Pipeline(config)
    events = _traffic(1200, seed=5)
    # After 1200 events the traffic changes: every transaction is big, many are fraud.
    shifted = [Transaction(f"s{i}", f"c{i % 40}", "m-new", 2000.0 + i, T0 + (1200 + i) * 60.0,
                           i % 3 == 0) for i in range(1200)]
    for tx in events + shifted:
        pipe.score(tx, 2)
    drifts = list(pipe.oversight.recent_drift)
    assert any(d.kind == "psi" for d in drifts)
    psi = next(d for d in drifts if d.kind == "psi")  # the first one: none before the shift
    assert psi.partition == 2 and psi.at >= T0 + 1200 * 60.0
    assert pipe.oversight.drift_counts[("psi", "up")] >= 1


def test_drifts_are_logged_once_per_kind_and_partition_per_interval_and_all_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    config = PipelineConfig(oversight=OversightConfig(
        psi_reference=200, psi_window=200, psi_warmup=600, drift_log_interval_s=86400.0))
    pipe = Pipeline(config)
    rng = random.Random(5)
    caplog.set_level(logging.INFO, logger="stream.core.pipeline")
    for i in range(6000):  # one every 10 s (17 hours); amounts x30 in every other 600 events
        fraud = rng.random() < 0.05
        amount = rng.uniform(300, 900) if fraud else rng.uniform(5, 80)
        if (i // 600) % 2 == 1 and i >= 1200:
            amount *= 30
        pipe.score(Transaction(f"t{i}", f"c{rng.randrange(40)}", f"m{rng.randrange(10)}",
                               amount, T0 + i * 10.0, fraud), 2)
    counts = pipe.oversight.drift_counts
    assert counts[("psi", "up")] >= 3  # the traffic flipped, and flipped back, several times
    lines = [r.getMessage() for r in caplog.records if "drift detected" in r.getMessage()]
    kinds = {kind for kind, _ in counts}
    assert len(lines) == len(kinds)  # one line per kind on this partition in the interval
    assert all("on partition 2" in line for line in lines)
    assert pipe.oversight.alarms.suppressed_total == sum(counts.values()) - len(kinds)
    metrics = Metrics(CollectorRegistry())
    QualityGauges(metrics).refresh(pipe.oversight, pipe.model_version)
    for (kind, direction), total in counts.items():
        assert metrics.drift_detected.labels(kind, direction)._value.get() == total


def test_unlabelled_transactions_can_be_assumed_legitimate_after_n_days() -> None:
    days = 2
    on = PipelineConfig(evict_every=10, oversight=OversightConfig(
        unlabelled_as_legit_s=days * 86400.0))
    off = PipelineConfig(evict_every=10)
    for config, expected in ((on, True), (off, False)):
        pipe = Pipeline(config)
        for i in range(50):  # unlabelled, one an hour
            pipe.score(Transaction(f"u{i}", "c", "m", 10.0, T0 + i * 3600.0), 0)
        pipe.learn_label(Label("u49", "c", True, T0 + 50 * 3600.0))  # a real chargeback
        for i in range(50, 120):
            pipe.score(Transaction(f"u{i}", "c", "m", 10.0, T0 + i * 3600.0), 0)
        assumed = pipe.oversight.assumed_legit
        if expected:
            # Everything older than two days at the last eviction, except the chargeback.
            assert 60 <= assumed <= 72 and "u49" not in pipe.pending
            assert pipe.summary().labels == assumed + 1
        else:
            assert assumed == 0 and pipe.summary().labels == 1


def test_label_delay_and_alert_rate_reach_the_evaluation() -> None:
    pipe = Pipeline(PipelineConfig(label_delay_s=3 * 86400.0))
    for tx in _traffic(6000, seed=7):  # 6000 minutes: about four days
        pipe.score(tx, 0)
    snap = pipe.summary()
    assert snap.decisions == 6000 and 0 < snap.labels < 6000
    assert snap.label_delay_mean_s == pytest.approx(3 * 86400.0)
    assert 0.0 <= snap.alert_rate <= 1.0 and not math.isnan(snap.label_rate)
    registry = CollectorRegistry()
    QualityGauges(Metrics(registry)).refresh(pipe.oversight, pipe.model_version)
    # Every label's delay reaches the histogram once (observed in bulk at the refresh).
    assert registry.get_sample_value("fraudstream_label_delay_seconds_count") == snap.labels
    assert registry.get_sample_value("fraudstream_label_delay_seconds_sum") == pytest.approx(
        snap.labels * 3 * 86400.0)
    assert registry.get_sample_value("fraudstream_label_delay_seconds_bucket",
                                     {"le": "+Inf"}) == snap.labels
    assert not pipe.oversight.drain_label_delays()


def test_a_delayed_label_is_never_used_before_its_transaction_is_scored() -> None:
    """Labels that arrive first are held; each is learned right after its transaction."""
    pipe = Pipeline(PipelineConfig())
    events = _traffic(200, seed=9)
    for tx in events:
        assert pipe.learn_label(Label(tx.transaction_id, tx.card_id, bool(tx.is_fraud),
                                      tx.timestamp)) == "held"
    learned_before = pipe.summary().labels
    assert learned_before == 0
    for i, tx in enumerate(events):
        unlabelled = Transaction(tx.transaction_id, tx.card_id, tx.merchant_id, tx.amount,
                                 tx.timestamp)
        scored = pipe.score(unlabelled, 0)
        assert scored.learned == 1 and pipe.summary().labels == i + 1
