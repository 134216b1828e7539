"""The champion's feature crosses (`scoring/model.py` `Crossed`): what they compute, that the
step-through learns them as River's pipeline would, how a restore and the settings take them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import compose

from stream.assembly import feature_crosses, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import parse_timestamp
from stream.contracts.messages import Transaction
from stream.core.features.extractor import FeatureExtractor
from stream.core.scoring.model import (
    CROSS_CLAMP,
    DEFAULT_CROSSES,
    Crossed,
    ModelSpec,
    cross_name,
    in_form_of,
    learn_one,
    make_model,
    score_one,
)
from stream.core.scoring.zoo import make_challenger, parse_challenger
from stream.devtools.synthetic import TrafficConfig, generate
from stream.errors import ConfigError

CROSSES = (("amount_log", "card_count_1d"), ("card_count_1d", "hour_sin"),
           ("hour_sin", "merchant_count_1d"), ("amount_log", "not_a_feature"))
NAMES = ("amount_log", "card_count_1d", "hour_sin", "merchant_count_1d")
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
rows = st.lists(st.tuples(st.fixed_dictionaries({n: values for n in NAMES}), st.booleans(),
                          st.sampled_from([1.0, 2.5]), st.floats(0, 1e6)),
                min_size=1, max_size=40)


def _extracted(n: int = 3_000) -> tuple[tuple[str, ...], np.ndarray]:
    """Decision-time features of a synthetic stream, as the scorer computes them."""
    fx = FeatureExtractor()
    out = []
    for i, e in enumerate(generate(TrafficConfig(n, seed=5, n_cards=300, n_merchants=60))):
        tx = Transaction(e["transaction_id"], e["card_id"], e["merchant_id"], e["amount"],
                         parse_timestamp(e["timestamp"]))
        features = fx.extract(tx)
        out.append([features[name] for name in fx.feature_names])
        if e["is_fraud"] and i % 3 == 0:  # some labels, so the fraud features move too
            fx.learn_label(tx.merchant_id, True, tx.timestamp, card_id=tx.card_id)
    return fx.feature_names, np.array(out)


def test_the_crosses_are_products_of_the_scaled_features_recomputed_in_batch() -> None:
    names, x = _extracted()
    model = make_model(ModelSpec())
    for i, row in enumerate(x[:2_000].tolist()):
        learn_one(model, dict(zip(names, row, strict=True)), i % 50 == 0, t=float(i))
    # The batch recomputation: log1p of the heavy-tailed columns (zero at or below 0),
    # standardised with the scaler's statistics, clamped, then each pair's product.
    compressed = x[2_000:].copy()
    for j, name in enumerate(names):
        if name.startswith(("card_count_", "card_mean_amount_", "card_amount_ratio_",
                            "merchant_count_")) or name in (
                "card_recent_vs_long", "merchant_activity_ratio", "card_frauds_7d"):
            column = compressed[:, j]
            compressed[:, j] = np.where(column > 0, np.log1p(np.maximum(column, 0)), 0.0)
    scaler = model["StandardScaler"]
    mean = np.array([scaler.means[n] for n in names])
    std = np.sqrt(np.array([scaler.vars[n] for n in names]))
    z = np.where(std > 0, (compressed - mean) / np.where(std > 0, std, 1.0), 0.0)
    z = np.clip(z, -CROSS_CLAMP, CROSS_CLAMP)
    col = {n: j for j, n in enumerate(names)}
    steps = list(model.steps.values())[:-1]
    assert [type(step.func).__name__ for step in (steps[0], steps[2])] == ["function", "Crossed"]
    transformed = []
    for row in x[2_000:].tolist():
        inputs = dict(zip(names, row, strict=True))
        for step in steps:
            inputs = step.transform_one(inputs)
        transformed.append(inputs)
    assert all(len(r) == len(names) + len(DEFAULT_CROSSES) for r in transformed)
    assert list(transformed[0])[:len(names)] == list(names)  # features first, crosses after
    for a, b in DEFAULT_CROSSES:
        expected = z[:, col[a]] * z[:, col[b]]
        got = np.array([r[cross_name(a, b)] for r in transformed])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert np.all(np.isfinite(got))
    assert any(np.any(np.array([r[cross_name(a, b)] for r in transformed]) != 0.0)
               for a, b in DEFAULT_CROSSES)


def _state(model: compose.Pipeline) -> str:
    scaler, regression = model["StandardScaler"], model["LogisticRegression"]
    return repr((dict(scaler.counts), dict(scaler.means), dict(scaler.vars),
                 dict(regression.weights), regression.intercept))


@settings(max_examples=100, deadline=None)
@given(rows)
def test_the_step_through_learns_the_crosses_as_rivers_pipeline(examples: list) -> None:
    spec = ModelSpec(crosses=CROSSES)
    ours, rivers = make_model(spec), make_model(spec)
    for features, is_fraud, weight, t in examples:
        expected = float(rivers.predict_proba_one(features)[True])
        got = score_one(ours, features)
        assert got == expected or (math.isnan(got) and math.isnan(expected))
        learn_one(ours, features, is_fraud, weight, t)
        rivers.learn_one(features, is_fraud, w=weight, t=t)
        assert _state(ours) == _state(rivers)
    # The three crosses the names can form are learned; the fourth names a missing feature.
    assert {k for k in ours["LogisticRegression"].weights if "*" in k} == {
        "amount_log*card_count_1d", "card_count_1d*hour_sin", "hour_sin*merchant_count_1d"}


def test_a_champion_restored_from_before_the_crosses_takes_them_without_a_jump() -> None:
    old = make_model(ModelSpec(crosses=()))
    features = {"amount_log": 2.0, "card_count_1d": 4.0, "card_count_1h": 1.0,
                "card_seconds_since_prev_log": 3.0}
    for i in range(200):
        learn_one(old, {k: v * (1 + i % 5) for k, v in features.items()}, i % 7 == 0, t=i * 60.0)
    before = score_one(old, features)
    new = in_form_of(old, make_model(ModelSpec()))
    assert new["crosses"].func == Crossed(DEFAULT_CROSSES)
    assert score_one(new, features) == before  # a new cross starts unscaled, at weight 0
    for i in range(3):  # the cross's scaler needs two values before it passes any on
        learn_one(new, {**features, "amount_log": 1.0 + i}, True, t=(200 + i) * 60.0)
    assert new["LogisticRegression"].weights["amount_log*card_count_1d"] != 0.0
    # And back: a restore configured without crosses drops the step, keeps what was learned.
    plain = in_form_of(new, make_model(ModelSpec(crosses=())))
    assert list(plain.steps) == ["compress", "StandardScaler", "LogisticRegression"]
    assert plain["LogisticRegression"] is new["LogisticRegression"]
    # Already in the configured form: the same object back.
    assert in_form_of(new, make_model(ModelSpec())) is new


def test_challengers_see_the_champions_crosses() -> None:
    spec = parse_challenger("gnb")
    assert make_challenger(spec)["crosses"].func == Crossed(DEFAULT_CROSSES)
    assert make_challenger(spec, CROSSES[:1])["crosses"].func == Crossed(CROSSES[:1])
    assert list(make_challenger(spec, ()).steps) == ["compress", "StandardScaler", "GaussianNB"]
    sgd = make_challenger(parse_challenger("logreg-lr0.01"), CROSSES[:1])
    assert sgd["crosses"].func == Crossed(CROSSES[:1])


def test_the_setting_names_features_and_defaults_to_those_the_horizons_form() -> None:
    assert feature_crosses(load_settings(environ={})) == DEFAULT_CROSSES
    assert pipeline_config(load_settings(environ={})).model.crosses == DEFAULT_CROSSES
    configured = load_settings(environ={"FRAUDSTREAM_FEATURE_CROSSES":
                                        '["amount_log * is_night", "amount_log*is_night"]'})
    assert feature_crosses(configured) == (("amount_log", "is_night"),)
    assert feature_crosses(load_settings(environ={}, feature_crosses=[])) == ()
    for bad, said in (("amount_log*is_nite", "'is_nite' unknown"),
                      ("amount_log", "two feature names"),
                      ("a*b*c", "two feature names")):
        with pytest.raises(ConfigError, match=said):
            feature_crosses(load_settings(environ={}, feature_crosses=[bad]))
    # Other horizons: the default keeps the pairs those features can form, nothing fails.
    hourly = load_settings(environ={}, horizons_s=[3600.0, 86400.0])
    kept = feature_crosses(hourly)
    assert kept and len(kept) < len(DEFAULT_CROSSES)
    assert all("card_count_10m" not in pair for pair in kept)
    assert set(FeatureExtractor(horizons_s=(3600.0, 86400.0)).feature_names).issuperset(
        name for pair in kept for name in pair)
