"""The averaged champion (`scoring/averaged.py`): it learns exactly as River's logistic
regression does, scores with an exponential average of the weights over label time, and
that average travels with the model (snapshots, the shared champion's copies)."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import linear_model, optim
from river.utils import VectorDict

from stream.assembly import model_spec, pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.averaged import AveragedLogisticRegression
from stream.core.scoring.model import (
    DAY_S,
    ModelSpec,
    make_model,
    score_one,
    top_contributions,
)
from stream.core.scoring.zoo import make_challenger, parse_challenger
from stream.errors import ConfigError

NAMES = ("a", "b", "c")
value = st.floats(min_value=-50, max_value=50, allow_nan=False)
steps = st.lists(st.tuples(st.fixed_dictionaries({n: value for n in NAMES}), st.booleans(),
                           st.floats(min_value=-5.0, max_value=400.0)), min_size=1, max_size=60)


def _pair(average_s: float = 100.0) -> tuple[AveragedLogisticRegression,
                                              linear_model.LogisticRegression]:
    params = {"loss": optim.losses.Log(weight_pos=5.0), "clip_gradient": 1.0}
    return (AveragedLogisticRegression(average_s, optimizer=optim.SGD(0.05), **params),
            linear_model.LogisticRegression(optimizer=optim.SGD(0.05), **params))


@settings(max_examples=100, deadline=None)
@given(steps)
def test_it_learns_as_rivers_regression_and_scores_with_the_reference_average(
        examples: list) -> None:
    averaged, plain = _pair()
    t = 0.0
    reference: dict[str, float] = {}
    ref_intercept, started, last = 0.0, None, None
    for x, y, dt in examples:
        t += dt  # label time, sometimes going back a little
        averaged.learn_one(x, y, t=t)
        plain.learn_one(x, y)
        assert averaged.weights == plain.weights and averaged.intercept == plain.intercept
        # The reference average, written out: follow the weights for the first 100 s of
        # label time, then move by 1 - exp(-dt / 100) towards them; wait when time goes back.
        started = t if started is None else started
        if last is None or t - started < 100.0:
            share = 1.0
        elif t > last:
            share = 1.0 - math.exp(-(t - last) / 100.0)
        else:
            share = 0.0
        if last is None or t > last:
            last = t
        for name, w in plain.weights.items():
            reference[name] = reference.get(name, 0.0) + share * (w - reference.get(name, 0.0))
        ref_intercept += share * (plain.intercept - ref_intercept)
        got = averaged.scoring_weights()
        assert got.keys() == reference.keys()
        assert all(math.isclose(got[k], reference[k], rel_tol=1e-9, abs_tol=1e-12)
                   for k in reference)
        assert math.isclose(averaged.average_intercept, ref_intercept, rel_tol=1e-9,
                            abs_tol=1e-12)
        probe = {n: 1.0 for n in NAMES}
        logit = sum(reference[k] * probe.get(k, 0.0) for k in reference) + ref_intercept
        expected = 1.0 / (1.0 + math.exp(-max(min(logit, 500.0), -500.0)))
        assert math.isclose(averaged.predict_proba_one(probe)[True], expected, rel_tol=1e-9,
                            abs_tol=1e-12)


def test_after_the_first_period_the_average_lags_the_weights_and_without_a_time_it_catches_up(
) -> None:
    averaged, _ = _pair(average_s=1000.0)
    for i in range(200):
        averaged.learn_one({"a": 1.0}, i % 10 == 0, t=float(i * 10))  # 2,000 s of labels
    raw, average = averaged.weights["a"], averaged.scoring_weights()["a"]
    assert raw != average  # past the first 1,000 s the average trails
    averaged.learn_one({"a": 1.0}, False)  # River's API, no label time: the weights
    assert averaged.scoring_weights() == averaged.weights


def test_the_horizon_is_label_time_so_splitting_the_labels_does_not_stretch_it() -> None:
    """At 4 partitions each model sees a quarter of the labels over the same label time; its
    average must cover the same time, not four times as much. The weights jump from 0 to 1
    at t = 100 (past the first period): 60 s later both averages have moved 1 - exp(-60/50)
    of the way, whether they stepped every second or every fourth."""
    every, quarter = _pair(average_s=50.0)[0], _pair(average_s=50.0)[0]
    for t in range(0, 161):
        for model, stride in ((every, 1), (quarter, 4)):
            if t % stride == 0:
                model._weights = VectorDict({"a": 1.0 if t > 100 else 0.0})
                model.follow(float(t))
    expected = 1.0 - math.exp(-60.0 / 50.0)
    assert every.scoring_weights()["a"] == pytest.approx(expected, abs=0.02)
    assert quarter.scoring_weights()["a"] == pytest.approx(expected, abs=0.05)


def test_the_champion_is_averaged_by_default_and_avg0_is_the_plain_regression() -> None:
    model = make_model(ModelSpec())
    assert isinstance(model["LogisticRegression"], AveragedLogisticRegression)
    assert model["LogisticRegression"].average_s == 3 * DAY_S
    plain = make_model(ModelSpec(average_days=0.0))
    assert type(plain["LogisticRegression"]) is linear_model.LogisticRegression
    spec = model_spec(load_settings(environ={"FRAUDSTREAM_AVERAGE_DAYS": "0.5"}))
    assert spec.average_days == 0.5 and spec.name.endswith("-avg0.5")
    with pytest.raises(ConfigError):
        pipeline_config(load_settings(environ={}, average_days=-1.0))
    assert parse_challenger("logreg-avg0").name == "logreg-avg0"
    challenger = make_challenger(parse_challenger("logreg-lr0.05-avg0"))
    assert type(challenger["LogisticRegression"]) is linear_model.LogisticRegression


def _traffic(n: int) -> list[Transaction]:
    return [Transaction(f"t{i}", f"c{i % 40}", f"m{i % 7}", 10.0 + (i * 37) % 900,
                        1_700_000_000.0 + i * 600.0, is_fraud=(i % 23 == 0))
            for i in range(n)]


def test_the_pipeline_scores_with_the_average_and_explains_with_it_and_a_snapshot_keeps_it(
) -> None:
    config = PipelineConfig(model=ModelSpec(average_days=0.5), explain_top_k=3)
    pipe = Pipeline(config)
    for tx in _traffic(600):  # 600 labels over 100 hours of label time
        pipe.score(tx, 0)
    model = pipe.partitions[0].model
    regression = model["LogisticRegression"]
    assert regression.scoring_weights() != regression.weights
    probe = _traffic(601)[-1]
    features = pipe.partitions[0].features.extract(probe)
    plain = make_model(ModelSpec(average_days=0.0))
    plain["StandardScaler"].__dict__.update(pickle.loads(pickle.dumps(
        model["StandardScaler"])).__dict__)
    plain["LogisticRegression"]._weights = pickle.loads(pickle.dumps(regression._average))
    plain["LogisticRegression"].intercept = regression.average_intercept
    assert score_one(model, features) == score_one(plain, features)
    assert top_contributions(model, features, 3) == top_contributions(plain, features, 3)
    # The average is part of the model: a snapshot restored elsewhere scores the same.
    restored = Pipeline(config)
    restored.restore_partition(pickle.loads(pickle.dumps(pipe.export_partition(0))))
    assert score_one(restored.partitions[0].model, features) == score_one(model, features)


def _trained(spec: ModelSpec) -> Pipeline:
    pipe = Pipeline(PipelineConfig(model=spec))
    for tx in _traffic(600):
        pipe.score(tx, 0)
    return pipe


def test_a_snapshot_from_before_the_average_restores_into_the_averaged_form_without_a_jump(
) -> None:
    old = _trained(ModelSpec(average_days=0.0))
    snapshot = pickle.loads(pickle.dumps(old.export_partition(0)))
    upgraded = Pipeline(PipelineConfig(model=ModelSpec(average_days=3.0)))
    upgraded.restore_partition(snapshot)
    model = upgraded.partitions[0].model
    regression = model["LogisticRegression"]
    assert isinstance(regression, AveragedLogisticRegression)
    assert regression.weights == old.partitions[0].model["LogisticRegression"].weights
    features = old.partitions[0].features.extract(_traffic(601)[-1])
    assert score_one(model, features) == score_one(old.partitions[0].model, features)
    # And back: a scorer configured without the average scores with the raw weights.
    averaged = _trained(ModelSpec(average_days=0.5))
    plain = Pipeline(PipelineConfig(model=ModelSpec(average_days=0.0)))
    plain.restore_partition(pickle.loads(pickle.dumps(averaged.export_partition(0))))
    back = plain.partitions[0].model["LogisticRegression"]
    assert type(back) is linear_model.LogisticRegression
    assert back.weights == averaged.partitions[0].model["LogisticRegression"].weights
    # Another average_days keeps the average learned so far, over the new time constant.
    longer = Pipeline(PipelineConfig(model=ModelSpec(average_days=2.0)))
    longer.restore_partition(pickle.loads(pickle.dumps(averaged.export_partition(0))))
    kept = longer.partitions[0].model["LogisticRegression"]
    assert kept.average_s == 2 * DAY_S
    assert kept.scoring_weights() == averaged.partitions[0].model[
        "LogisticRegression"].scoring_weights()


def test_rivers_clone_keeps_every_parameter() -> None:
    regression = make_model(ModelSpec())["LogisticRegression"]
    clone = regression.clone()
    assert type(clone) is AveragedLogisticRegression and clone.average_s == 3 * DAY_S
    assert clone.optimizer.learning_rate == 0.005 and clone.loss.weight_pos == 5.0
    assert clone.clip_gradient == 1.0
