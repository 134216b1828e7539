"""The compiled loops (`scoring/_steps.c`) are the Python in `scoring/model.py` bit for bit:
the same scaled values, the same scaler state key for key and in the same order, the same
crosses, on values a feature never has too (NaN, infinities, ints, zero variances), and
whatever they decline goes to the Python with nothing changed."""

from __future__ import annotations

import collections
import copy
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.utils import VectorDict

import stream.core.scoring.model as model
from stream.core.scoring.model import (
    Crossed,
    FrozenScorer,
    ModelSpec,
    _add_crosses_py,
    _heavy_flags,
    _scale,
    _scale_py,
    learn_one,
    make_model,
)

# Heavy (compressed) and plain names, so both branches of every loop run.
NAMES = ("amount_log", "card_count_1d", "card_frauds_7d", "hour_sin", "merchant_count_1d",
         "merchant_fraud_rate_7d")
CROSSES = (("card_count_1d", "amount_log"), ("hour_sin", "merchant_count_1d"))
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
value = st.one_of(finite, finite, finite, st.floats(),  # NaN and infinities too
                  st.integers(min_value=-10**6, max_value=10**6),
                  st.sampled_from([0.0, -0.0, 1e-310, 5e-324, 1.0]))
row = st.lists(st.tuples(st.sampled_from(NAMES), value), min_size=1, max_size=len(NAMES)).map(
    dict)
rows = st.lists(st.tuples(row, st.booleans()), min_size=1, max_size=30)


@pytest.fixture(scope="module")
def compiled() -> Iterator[object]:
    steps = model._compiled
    assert steps is not None, (
        "stream.core.scoring._steps is not built: the install found no C compiler or Python "
        "headers (`make venv` builds it with gcc), so the scorer runs the slower Python")
    yield steps


def _bits(d: dict) -> list[tuple[str, str, str]]:
    """Keys in order, each value's type and exact repr (repr: NaN equals NaN, -0.0 is not 0.0)."""
    return [(k, type(v).__name__, repr(v)) for k, v in d.items()]


def _scaler_bits(scaler: object) -> tuple[list, list, list]:
    return (_bits(scaler.counts), _bits(scaler.means), _bits(scaler.vars))  # type: ignore[attr-defined]


def test_the_compiled_steps_are_built(compiled: object) -> None:
    assert model.COMPILED
    assert {"scale", "add_crosses", "frozen", "frozen_dot"} <= set(dir(compiled))


@settings(max_examples=300, deadline=None)
@given(examples=rows, reads=st.lists(row, max_size=5))
def test_scaling_and_learning_are_the_pythons_bit_for_bit(compiled: object, examples: list,
                                                         reads: list) -> None:
    crossed = Crossed(CROSSES)
    ours, reference = (make_model(ModelSpec())["StandardScaler"] for _ in range(2))
    for features, _ in examples:
        for learn in (False, True):
            names = tuple(features)
            got = _scale(ours, names, features.values(), learn, crossed)
            expected = _scale_py(reference, names, list(features.values()), learn, None)
            _add_crosses_py(expected, crossed.resolve(names))
            assert _bits(got) == _bits(expected)
            assert _scaler_bits(ours) == _scaler_bits(reference)
    for features in reads:  # a score of names never learned inserts them, as defaultdict does
        names = tuple(features)
        assert _bits(_scale(ours, names, features.values(), False, None)) == _bits(
            _scale_py(reference, names, features.values(), False, None))
        assert _scaler_bits(ours) == _scaler_bits(reference)


@settings(max_examples=200, deadline=None)
@given(out=st.dictionaries(st.sampled_from(NAMES), st.floats(), min_size=2),
       pairs=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=6))
def test_crosses_are_the_pythons_bit_for_bit(compiled: object, out: dict, pairs: list) -> None:
    plan = Crossed(tuple(pairs)).resolve(tuple(out))
    ours, reference = dict(out), dict(out)
    assert compiled.add_crosses(ours, plan) is None  # type: ignore[attr-defined]
    _add_crosses_py(reference, plan)
    assert _bits(ours) == _bits(reference)


@settings(max_examples=150, deadline=None)
@given(examples=rows, reads=st.lists(row, min_size=1, max_size=8))
def test_an_epoch_copy_scores_as_the_python_bit_for_bit(compiled: object, examples: list,
                                                        reads: list) -> None:
    trained = make_model(ModelSpec(crosses=CROSSES))
    for features, is_fraud in examples:
        learn_one(trained, features, is_fraud)
    scorer = FrozenScorer(trained)
    for features in reads:
        got = scorer(features)
        out = scorer._frozen_py(tuple(features), features)
        _add_crosses_py(out, scorer._plan)
        expected = float(trained["LogisticRegression"].predict_proba_one(out)[True])
        assert repr(got) == repr(expected)
        assert _bits(compiled.frozen(  # type: ignore[attr-defined]
            tuple(features), features.values(), scorer._flags, scorer._means, scorer._stds)) \
            == _bits(scorer._frozen_py(tuple(features), features))


@settings(max_examples=150, deadline=None)
@given(examples=st.lists(st.tuples(st.fixed_dictionaries({n: finite for n in NAMES}),
                                   st.booleans()), min_size=1, max_size=30),
       reads=st.lists(row, min_size=1, max_size=8), averaged=st.booleans())
def test_an_epoch_copy_of_a_learned_model_sums_its_score_in_c(
        compiled: object, examples: list, reads: list, averaged: bool) -> None:
    """Every name learned, so the linear score runs in `frozen_dot` (not the dict path the
    test above mostly takes), for the averaged and the plain regression, bit for bit."""
    trained = make_model(ModelSpec(crosses=CROSSES, average_days=1e-4 if averaged else 0.0))
    for t, (features, is_fraud) in enumerate(examples):
        learn_one(trained, features, is_fraud, t=float(t))
    scorer = FrozenScorer(trained)
    for features in reads:
        got = scorer(features)
        assert scorer._linear is not None
        out = scorer._frozen_py(tuple(features), features)
        _add_crosses_py(out, scorer._plan)
        expected = float(trained["LogisticRegression"].predict_proba_one(out)[True])
        assert repr(got) == repr(expected)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.text(min_size=1, max_size=3), finite, finite), max_size=40))
def test_rivers_dot_adds_the_terms_in_the_given_dicts_order(pairs: list) -> None:
    """What `frozen_dot` relies on to give River's sum: its dot walks the dict it is given,
    adding weight x value to a sum that starts at 0.0 (float addition is not associative,
    so another order would differ in the last bits)."""
    x = {name: value for name, value, _ in pairs}
    weights = {name: weight for name, _, weight in reversed(pairs)}  # another insertion order
    total = 0.0
    for name, value in x.items():
        total += weights[name] * value
    assert repr(VectorDict(weights).dot(x)) == repr(total)


def test_an_epoch_copy_with_a_name_never_learned_scores_through_river(compiled: object) -> None:
    trained = make_model(ModelSpec(crosses=CROSSES))
    learn_one(trained, {"amount_log": 1.0, "card_count_1d": 2.0}, True, t=0.0)
    scorer = FrozenScorer(trained)
    shown = {"amount_log": 1.5, "card_count_1d": 1.0, "hour_sin": 0.5}  # hour_sin unlearned
    got = scorer(shown)
    assert scorer._linear is None
    out = scorer._frozen_py(tuple(shown), shown)
    _add_crosses_py(out, scorer._plan)
    assert repr(got) == repr(float(trained["LogisticRegression"].predict_proba_one(out)[True]))


def test_what_the_compiled_loop_declines_is_left_untouched_for_the_python(
        compiled: object) -> None:
    names = ("amount_log", "card_count_1d")
    scaler = make_model(ModelSpec())["StandardScaler"]
    _scale(scaler, names, [1.0, 2.0], True, None)
    before = _scaler_bits(scaler)
    flags = _heavy_flags(names)
    args = (scaler.counts, scaler.means, scaler.vars, names)

    class Float(float):  # a subclass may do its own arithmetic
        pass

    for values in ([Float(1.0), 2.0], [1.0, "2"], [1.0, 10**400], [1.0, None]):
        assert compiled.scale(*args, values, flags, True) is NotImplemented  # type: ignore[attr-defined]
        assert _scaler_bits(scaler) == before
    plain = dict(scaler.means)  # a scaler restored with plain dicts raises where Python would
    assert compiled.scale(scaler.counts, plain, scaler.vars, names, [1.0, 2.0], flags,  # type: ignore[attr-defined]
                          True) is NotImplemented
    ints = copy.deepcopy(scaler)  # an int mean: Python subtracts ints exactly, C could not
    ints.means["amount_log"] = 2**53 + 1
    for learn in (False, True):
        assert compiled.scale(ints.counts, ints.means, ints.vars, names, [1, 2**53 + 3],  # type: ignore[attr-defined]
                              flags, learn) is NotImplemented
        reference = copy.deepcopy(ints)
        assert _bits(_scale(ints, names, [1, 2**53 + 3], learn, None)) == _bits(_scale_py(
            reference, names, [1, 2**53 + 3], learn, None))
        assert _scaler_bits(ints) == _scaler_bits(reference)
    other = collections.defaultdict(int, scaler.vars)
    assert compiled.scale(scaler.counts, scaler.means, other, names, [1.0, 2.0], flags,  # type: ignore[attr-defined]
                          False) is NotImplemented
    assert compiled.add_crosses({"a": 1}, (("a", "a", "a*a"),)) is NotImplemented  # type: ignore[attr-defined]
    assert compiled.add_crosses({"a": 1.0}, (("a", "b", "a*b"),)) is NotImplemented  # type: ignore[attr-defined]
    dot = compiled.frozen_dot  # type: ignore[attr-defined]
    shape = ((False,), [0.0], [1.0], [1.0], (), [])
    assert dot({"a": 2.0}, *shape) == 2.0
    for features in ({"a": 10**400}, {"a": "2"}, {"a": Float(1.0)}, {"a": 1.0, "b": 1.0}):
        assert dot(features, *shape) is NotImplemented
    assert dot({"a": 2.0}, (False,), [0.0], [1.0], [1.0], ((0, 1),), [1.0]) is NotImplemented
    assert dot({"a": 2.0}, (False,), [0], [1.0], [1.0], (), []) is NotImplemented


def test_a_negative_variance_is_rooted_as_python_roots_it(compiled: object) -> None:
    """Python's `(-v) ** 0.5` is complex; a scaler state never has one, but a restored one
    might, and then both loops give what Python gives."""
    ours = make_model(ModelSpec())["StandardScaler"]
    ours.means["amount_log"], ours.vars["amount_log"], ours.counts["amount_log"] = 1.0, -4.0, 3
    reference = copy.deepcopy(ours)
    for learn in (False, True):
        got = _scale(ours, ("amount_log",), [2.0], learn, None)
        expected = _scale_py(reference, ("amount_log",), [2.0], learn, None)
        assert repr(got) == repr(expected)
        assert _scaler_bits(ours) == _scaler_bits(reference)
    assert isinstance(expected["amount_log"], complex) or math.isfinite(expected["amount_log"])
