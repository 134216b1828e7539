"""The model's own step-through (`scoring/model.py` `_scaled`) is River's pipeline bit for bit,
and legitimate-label sampling (`scoring/sampling.py`) keeps what it says it keeps."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import compose, naive_bayes, optim

from stream.assembly import pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.model import (
    FrozenScorer,
    ModelSpec,
    learn_one,
    learn_values,
    make_model,
    score_one,
)
from stream.core.scoring.sampling import LegitSampling
from stream.core.scoring.zoo import preprocessing_steps
from stream.errors import ConfigError

NAMES = ("amount_log", "card_count_1d", "card_frauds_7d", "hour_sin", "merchant_count_1d")
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
rows = st.lists(st.tuples(st.fixed_dictionaries({n: values for n in NAMES}), st.booleans(),
                          st.sampled_from([1.0, 1.0, 2.5, 10.0])), min_size=1, max_size=40)


def _state(model: compose.Pipeline) -> tuple[object, ...]:
    scaler, regression = model["StandardScaler"], model["LogisticRegression"]
    return (dict(scaler.counts), dict(scaler.means), dict(scaler.vars),
            dict(regression.weights), regression.intercept)


# The default champion, and a plain regression with an L2 penalty and a tighter clip: the
# unrolled SGD step (`_sgd_step`) takes each of River's branches it copies.
SPECS = [ModelSpec(), ModelSpec(average_days=0.0, l2=0.01, clip_gradient=0.05)]


@pytest.mark.parametrize("spec", SPECS, ids=["default", "plain-l2-clip"])
@settings(max_examples=150, deadline=None)
@given(examples=rows)
def test_the_step_through_is_rivers_pipeline_bit_for_bit(spec: ModelSpec, examples: list) -> None:
    ours, rivers = make_model(spec), make_model(spec)
    for features, is_fraud, weight in examples:
        expected = float(rivers.predict_proba_one(features)[True])
        got = score_one(ours, features)
        assert got == expected or (math.isnan(got) and math.isnan(expected))
        learn_one(ours, features, is_fraud, weight)
        rivers.learn_one(features, is_fraud, w=weight)
        assert repr(_state(ours)) == repr(_state(rivers))  # repr: nan == nan


@settings(max_examples=100, deadline=None)
@given(rows)
def test_learning_from_a_row_of_values_is_learning_from_its_dict(examples: list) -> None:
    by_values, by_dict = make_model(ModelSpec()), make_model(ModelSpec())
    for t, (features, is_fraud, _) in enumerate(examples):
        row = [features[n] for n in NAMES]
        learn_values(by_values, NAMES, row, is_fraud, t=1000.0 * t)
        learn_one(by_dict, dict(zip(NAMES, row, strict=True)), is_fraud, t=1000.0 * t)
        assert repr(_state(by_values)) == repr(_state(by_dict))
    with pytest.raises(ValueError, match="4 values for 5 features"):
        learn_values(by_values, NAMES, [0.0] * 4, True)


def test_an_optimiser_the_step_does_not_unroll_goes_through_river() -> None:
    ours, rivers = make_model(ModelSpec()), make_model(ModelSpec())
    for model in (ours, rivers):
        model["LogisticRegression"].optimizer = optim.Adam(0.01)
    for i in range(50):
        features = {n: float((i * 7 + j) % 11) for j, n in enumerate(NAMES)}
        learn_one(ours, features, i % 5 == 0, 2.0)
        rivers.learn_one(features, i % 5 == 0, w=2.0)
    assert repr(_state(ours)) == repr(_state(rivers))


def test_a_model_of_another_shape_goes_through_river() -> None:
    model = compose.Pipeline(*preprocessing_steps(), naive_bayes.GaussianNB())
    twin = copy.deepcopy(model)
    for i in range(30):
        features = {"amount_log": float(i % 7), "card_count_1d": float(i % 3)}
        learn_one(model, features, i % 4 == 0)
        twin.learn_one(features, i % 4 == 0)
    assert score_one(model, {"amount_log": 2.0, "card_count_1d": 1.0}) == float(
        twin.predict_proba_one({"amount_log": 2.0, "card_count_1d": 1.0})[True])


def test_sampling_keeps_fraud_and_high_scores_and_weights_the_rest() -> None:
    sampling = LegitSampling(score_at=0.2, floor=0.1)
    ids = [f"tx-{i}" for i in range(20_000)]
    assert all(sampling.weight(i, True, 0.0) == 1.0 for i in ids[:500])
    assert all(sampling.weight(i, False, 0.25) == 1.0 for i in ids[:500])
    weights = [sampling.weight(i, False, 0.05) for i in ids]  # keep 0.25, weight 4
    kept = [w for w in weights if w > 0.0]
    assert set(kept) == {4.0}
    assert abs(len(kept) / len(ids) - 0.25) < 0.02
    floor = [sampling.weight(i, False, 0.0) for i in ids]  # the floor: keep 0.1, weight 10
    assert abs(sum(w > 0 for w in floor) / len(ids) - 0.1) < 0.01
    # The expected weight is 1: the kept labels stand for the dropped ones.
    assert abs(sum(weights) / len(ids) - 1.0) < 0.08
    # Deterministic: the same id gets the same answer, in any process.
    assert [sampling.weight(i, False, 0.05) for i in ids[:100]] == weights[:100]
    assert not LegitSampling().enabled and LegitSampling().weight("t", False, 0.0) == 1.0


def test_sampling_validates_its_settings() -> None:
    for bad in ({"score_at": -0.1}, {"score_at": 1.5}, {"floor": 0.0}, {"floor": 1.5}):
        with pytest.raises(ValueError):
            LegitSampling(**bad)


def _stream(n: int) -> list[Transaction]:
    return [Transaction(f"t{i}", f"c{i % 40}", f"m{i % 9}", 10.0 + (i % 13), 1.7e9 + i,
                        i % 50 == 0) for i in range(n)]


def test_a_sampling_pipeline_learns_fewer_legitimate_labels_and_every_fraud_label() -> None:
    full = Pipeline(PipelineConfig())
    sampled = Pipeline(PipelineConfig(sampling=LegitSampling(score_at=0.5, floor=0.1)))
    again = Pipeline(PipelineConfig(sampling=LegitSampling(score_at=0.5, floor=0.1)))
    for tx in _stream(3000):
        full.score(tx, 0)
        sampled.score(tx, 0)
        again.score(tx, 0)
    steps = {name: p.partitions[0].model["StandardScaler"].counts["amount_log"]
             for name, p in (("full", full), ("sampled", sampled), ("again", again))}
    assert steps["full"] == 3000
    assert 60 < steps["sampled"] < 2000  # every fraud label (60) and some legitimate ones
    assert steps["again"] == steps["sampled"]  # the same choices on the same stream
    # Labels count as learned (the warm-up, the metrics) whether or not the model stepped.
    assert full.partitions[0].learned == sampled.partitions[0].learned == 3000
    assert _state(again.partitions[0].model) == _state(sampled.partitions[0].model)


def test_the_settings_reach_the_core_and_bad_ones_are_refused() -> None:
    config = pipeline_config(load_settings(environ={}, legit_sample_score=0.3,
                                           legit_sample_floor=0.2))
    assert config.sampling == LegitSampling(0.3, 0.2)
    assert pipeline_config(load_settings(environ={})).sampling == LegitSampling()
    with pytest.raises(ConfigError):
        load_settings(environ={}, legit_sample_score=1.5)


@settings(max_examples=100, deadline=None)
@given(rows, st.lists(st.fixed_dictionaries({n: values for n in NAMES}), min_size=1,
                      max_size=8))
def test_a_frozen_scorer_scores_as_score_one_bit_for_bit(examples: list, reads: list) -> None:
    model = make_model(ModelSpec())
    for features, is_fraud, weight in examples:
        learn_one(model, features, is_fraud, weight)
    scorer = FrozenScorer(copy.deepcopy(model))
    for features in reads:  # (fixed_dictionaries vary the key order: each is a new plan)
        for shown in (features, dict(list(features.items())[:3]), features):
            got, expected = scorer(shown), score_one(model, shown)
            assert got == expected or (math.isnan(got) and math.isnan(expected))
    # Reading made the same keys in the scaler's defaultdicts as score_one's reads did.
    assert repr(_state(scorer.model)) == repr(_state(model))


def test_a_frozen_scorer_of_another_shape_goes_through_river() -> None:
    model = compose.Pipeline(*preprocessing_steps(), naive_bayes.GaussianNB())
    for i in range(30):
        learn_one(model, {"amount_log": float(i % 7)}, i % 4 == 0)
    assert FrozenScorer(model)({"amount_log": 2.0}) == score_one(model, {"amount_log": 2.0})
