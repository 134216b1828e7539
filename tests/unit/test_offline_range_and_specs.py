"""Small parsers of the batch modes and the challenger factory, and the Oversight facade."""

from __future__ import annotations

import random

import pytest

from stream.core.evaluation.oversight import Oversight, OversightConfig
from stream.core.evaluation.shadow import PromotionRule
from stream.core.scoring.model import ModelSpec, make_model, score_one
from stream.core.scoring.policy import Policy
from stream.core.scoring.zoo import (
    ChallengerSpecError,
    challenger_names,
    make_challenger,
    parse_challenger,
)
from stream.errors import ConfigError
from stream.kafka.ranges import parse_offsets, parse_time


def test_offsets_and_times_parse_or_fail_with_a_config_error() -> None:
    assert parse_offsets(None) is None
    assert parse_offsets("1500") == {-1: 1500}
    assert parse_offsets("0:100,1:250") == {0: 100, 1: 250}
    assert parse_time("2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_time("1767225600000") == 1767225600.0
    with pytest.raises(ConfigError):
        parse_offsets("0:x")
    with pytest.raises(ConfigError):
        parse_time("yesterday")


@pytest.mark.parametrize("name", ["logreg-adam-lr0.01", "logreg-rmsprop-w1-l20.001", "alma",
                                  "hoeffding-g50", "hat", "gnb", "logreg-adagrad"])
def test_every_challenger_family_builds_learns_and_scores(name: str) -> None:
    spec = parse_challenger(name)
    assert parse_challenger(spec.name) == spec  # the canonical name round-trips
    model = make_challenger(spec)
    rng = random.Random(0)
    for _ in range(300):
        fraud = rng.random() < 0.2
        model.learn_one({"amount": rng.gauss(5 if fraud else 0, 1), "n": rng.random()}, fraud)
    high = score_one(model, {"amount": 6.0, "n": 0.5})
    low = score_one(model, {"amount": -1.0, "n": 0.5})
    assert 0.0 <= low <= high <= 1.0


def test_the_default_champion_spelled_as_a_challenger_is_the_same_model() -> None:
    assert parse_challenger("logreg-lr0.005-w5-avg3").name == ModelSpec().name
    a, b = make_model(ModelSpec()), make_challenger(parse_challenger("logreg-lr0.005-w5-avg3"))
    for i in range(50):
        x = {"amount": float(i % 7), "n": float(i % 3)}
        a.learn_one(x, i % 5 == 0)
        b.learn_one(x, i % 5 == 0)
    assert score_one(a, {"amount": 3.0, "n": 1.0}) == score_one(b, {"amount": 3.0, "n": 1.0})


@pytest.mark.parametrize("names, message", [
    (["xgboost"], "unknown challenger family"),
    (["logreg-lr0"], "bad parameter"),
    (["gnb", "GNB"], "listed twice"),
    (["logreg-lr0.005-w5-avg3"], "is the champion"),
])
def test_bad_challenger_lists_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(ChallengerSpecError, match=message):
        challenger_names(names, champion=ModelSpec().name)


def test_oversight_returns_a_promotion_and_acts_on_the_swap() -> None:
    config = OversightConfig(challengers=("good",), promotion=PromotionRule(
        "roc_auc", margin=0.05, min_labels=200), promotion_check_every=100)
    oversight = Oversight(config, "champ", Policy(), window=1000)
    rng = random.Random(1)
    promotions = []
    for i in range(400):
        y = rng.random() < 0.2
        champ = rng.random()  # no skill
        good = min(1.0, max(0.0, (0.8 if y else 0.2) + rng.gauss(0, 0.1)))
        scores = {"champ": champ, "good": good}
        leader = oversight.champion or "champ"  # the caller maps scores to the current roles
        others = {name: s for name, s in scores.items() if name != leader}
        oversight.decided(0, float(i), scores[leader], others)
        _, promotion = oversight.labelled(0, y, scores[leader], others, float(i), float(i) + 5)
        if promotion is not None:
            promotions.append((i, promotion))
            oversight.promoted(promotion)
    assert [i for i, _ in promotions] == [199]  # at the first check past 200 labels
    assert oversight.champion == "good" and list(oversight.challengers()) == ["champ"]
    assert len(oversight.drain_label_delays()) == 400
