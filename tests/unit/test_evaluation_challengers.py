"""Champion vs challengers: shadow statistics, metric deltas, and a promotion rule that only
fires past both the margin and the label count."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from stream.core.evaluation.shadow import ChampionChallengers, PromotionRule
from stream.core.scoring.policy import Policy

POLICY = Policy(0.2, 0.6)


def _scores(rng: random.Random, y: bool, skill: float) -> float:
    """A score that ranks fraud high with probability `skill`."""
    if rng.random() < skill:
        return rng.betavariate(6, 2) if y else rng.betavariate(1.5, 12)
    return rng.betavariate(1.5, 12) if y else rng.betavariate(6, 2) * 0.3


def _feed(cc: ChampionChallengers, n: int, skills: dict[str, float], seed: int = 0) -> list[
        tuple[bool, float, dict[str, float]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        y = rng.random() < 0.1
        champion = _scores(rng, y, skills[cc.champion])
        others = {name: _scores(rng, y, skills[name]) for name in cc.challengers}
        cc.update_decision(champion, others)
        cc.update_label(y, champion, others, decided_at=0.0, labelled_at=10.0)
        rows.append((y, champion, others))
    return rows


def test_agreement_score_difference_and_deltas_match_a_batch_recomputation() -> None:
    cc = ChampionChallengers("champ", ["a", "b"], POLICY, window=800)
    rows = _feed(cc, 2000, {"champ": 0.8, "a": 0.9, "b": 0.5}, seed=3)
    last = rows[-800:]
    snap = cc.summary()
    y = [r[0] for r in last]
    champ = np.array([r[1] for r in last])
    for name in ("a", "b"):
        other = np.array([r[2][name] for r in last])
        agree = np.mean([POLICY.decide(c) == POLICY.decide(o) for c, o in zip(champ, other,
                                                                             strict=True)])
        s = snap[name]
        assert s.decisions == 2000
        assert s.agreement == pytest.approx(agree)
        assert s.mean_abs_diff == pytest.approx(np.mean(np.abs(other - champ)))
        all_diffs = [abs(r[2][name] - r[1]) for r in rows]
        assert s.max_abs_diff == pytest.approx(max(all_diffs))
        assert s.deltas["roc_auc"] == pytest.approx(roc_auc_score(y, other)
                                                    - roc_auc_score(y, champ))
        assert s.deltas["pr_auc"] == pytest.approx(average_precision_score(y, other)
                                                   - average_precision_score(y, champ))
        assert s.deltas["log_loss"] == pytest.approx(log_loss(y, other) - log_loss(y, champ))
        assert s.metrics.label_delay_mean_s == 10.0
    assert snap["a"].deltas["roc_auc"] > 0 > snap["b"].deltas["roc_auc"]


def test_identical_models_agree_fully_and_never_promote() -> None:
    cc = ChampionChallengers("champ", ["twin"], POLICY, window=500,
                             rule=PromotionRule("roc_auc", margin=0.0, min_labels=10))
    rng = random.Random(1)
    for _ in range(1000):
        y = rng.random() < 0.1
        score = _scores(rng, y, 0.8)
        cc.update_decision(score, {"twin": score})
        cc.update_label(y, score, {"twin": score})
    snap = cc.summary()["twin"]
    assert snap.agreement == 1.0 and snap.mean_abs_diff == 0.0 and snap.max_abs_diff == 0.0
    assert all(delta == 0.0 for delta in snap.deltas.values())
    # margin 0 with equal metrics: gain 0 >= 0 would promote a twin; the rule must not swap
    # roles for no gain, so a zero margin still needs a strictly better challenger.
    assert cc.promotion() is None


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "log_loss"])
def test_promotion_fires_only_past_the_label_count(metric: str) -> None:
    rule = PromotionRule(metric, margin=0.02, min_labels=1500)  # type: ignore[arg-type]
    cc = ChampionChallengers("champ", ["better", "worse"], POLICY, window=1000, rule=rule)
    _feed(cc, 1499, {"champ": 0.6, "better": 0.95, "worse": 0.3}, seed=5)
    assert cc.promotion() is None  # clearly better, but not enough labels yet
    _feed(cc, 1, {"champ": 0.6, "better": 0.95, "worse": 0.3}, seed=6)
    promotion = cc.promotion()
    assert promotion is not None and promotion.challenger == "better"
    assert promotion.champion == "champ" and promotion.labels == 1500
    assert rule.gain(promotion.champion_value, promotion.challenger_value) >= 0.02


def test_promotion_fires_only_past_the_margin() -> None:
    cc = ChampionChallengers("champ", ["slightly"], POLICY, window=4000,
                             rule=PromotionRule("roc_auc", margin=0.05, min_labels=100))
    _feed(cc, 4000, {"champ": 0.80, "slightly": 0.82}, seed=8)
    delta = cc.summary()["slightly"].deltas["roc_auc"]
    assert 0 < delta < 0.05
    assert cc.promotion() is None
    looser = ChampionChallengers("champ", ["slightly"], POLICY, window=4000,
                                 rule=PromotionRule("roc_auc", margin=delta / 2, min_labels=100))
    _feed(looser, 4000, {"champ": 0.80, "slightly": 0.82}, seed=8)
    assert looser.promotion() is not None


def test_the_best_challenger_wins_and_a_swap_resets_the_count() -> None:
    rule = PromotionRule("pr_auc", margin=0.01, min_labels=500)
    cc = ChampionChallengers("champ", ["good", "best"], POLICY, window=2000, rule=rule)
    _feed(cc, 2000, {"champ": 0.5, "good": 0.8, "best": 0.95}, seed=9)
    promotion = cc.promotion()
    assert promotion is not None and promotion.challenger == "best"
    cc.swap("best")
    assert cc.champion == "best" and sorted(cc.challengers) == ["champ", "good"]
    assert cc.labels_since_swap == 0 and cc.promotion() is None
    # The old champion keeps its own evaluation, now in the challenger slot.
    assert cc.summary()["champ"].metrics.labels == 2000
    assert math.isnan(cc.summary()["champ"].agreement)  # shadow stats restart with roles
    _feed(cc, 600, {"champ": 0.5, "good": 0.8, "best": 0.95}, seed=10)
    assert cc.promotion() is None  # nobody beats the new champion
    with pytest.raises(KeyError):
        cc.swap("nobody")


def test_rule_and_names_are_validated() -> None:
    with pytest.raises(ValueError):
        PromotionRule("accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PromotionRule(min_labels=0)
    with pytest.raises(ValueError):
        ChampionChallengers("a", ["a"], POLICY)
