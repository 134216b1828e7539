"""The River model: heavy tails compressed, features scaled, then online logistic regression.

One factory builds every model (champion, challengers, one-off training), so serving and
training cannot drift apart in how the model is put together.

Why the compression and the gradient clip: counts, decayed amounts and ratios are heavy-tailed
(a popular merchant's daily count is in the thousands, a card's fraud count is almost always
0). Standardised, one rare value is tens of standard deviations out, and one SGD step on it
throws the weights far off; on the quality benchmark's stream the mean log loss then sat
near 9 for days. log1p of those features and a per-coordinate gradient clip of 1 keep every
step bounded: test-week ROC AUC 0.80 -> 0.88 and average precision 0.19 -> 0.39 at one
partition (docs/quality.md has the runs).

Why the crosses: a logistic model adds up its inputs' evidence, but fraud is often a
conjunction (many transactions in the hour *and* seconds apart; a merchant the card never used
*and* one with fresh fraud). The products of the scaled inputs of the pairs in
`DEFAULT_CROSSES`, learned beside the features, let it weigh those conjunctions, past the
weekly gradient-boosted trees on the quality benchmark (docs/quality.md "Feature crosses").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from math import log1p
from types import ModuleType
from typing import Any

from river import compose, linear_model, optim, preprocessing
from river.utils import VectorDict

from stream.core.scoring.averaged import AveragedLogisticRegression

_compiled: ModuleType | None
try:  # The per-event loops in C (_steps.c), bit for bit the `_py` functions below.
    from stream.core.scoring import _steps as _compiled
except ImportError:  # installed where no C compiler was found: the Python, same scores, slower
    _compiled = None

COMPILED = _compiled is not None
"""Whether the scaler's loops and the crosses run compiled: `fraudstream_build_info`'s
`model_loops` label says it, and a scorer without them warns at start-up."""

DAY_S = 86400.0

HEAVY_PREFIXES = ("card_count_", "card_mean_amount_", "card_amount_ratio_", "merchant_count_")
HEAVY_NAMES = frozenset({"card_recent_vs_long", "merchant_activity_ratio", "card_frauds_7d"})
_heavy_names: dict[tuple[str, ...], tuple[str, ...]] = {}


def _heavy_of(names: tuple[str, ...]) -> tuple[str, ...]:
    heavy = _heavy_names.get(names)
    if heavy is None:
        if len(_heavy_names) > 64:  # a handful of feature sets per process; never unbounded
            _heavy_names.clear()
        heavy = _heavy_names[names] = tuple(
            n for n in names if n.startswith(HEAVY_PREFIXES) or n in HEAVY_NAMES)
    return heavy


# The pairs whose product (of their scaled inputs) the champion learns beside the features.
# Chosen by an L1-penalised batch logistic regression over all 465 pairwise products of the
# standardised decision-time features
# on the quality stream's training window only (days 7-28, seed 7; the test week unseen),
# keeping the 20 largest weights, and checked on another seed's stream (docs/quality.md
# "Feature crosses"). `feature_crosses` replaces them (README "Learning from labels").
DEFAULT_CROSSES: tuple[tuple[str, str], ...] = (
    ("card_count_1h", "card_seconds_since_prev_log"),
    ("card_merchant_new", "merchant_frauds_7d_log"),
    ("card_count_1d", "card_recent_vs_long"),
    ("card_recent_vs_long", "card_is_first_seen"),
    ("card_count_1h", "card_count_1d"),
    ("hour_sin", "is_night"),
    ("card_count_1h", "merchant_count_7d"),
    ("card_count_10m", "card_mean_amount_10m"),
    ("card_count_1h", "is_night"),
    ("merchant_count_7d", "is_night"),
    ("card_count_1h", "card_recent_vs_long"),
    ("amount_log", "card_recent_vs_long"),
    ("card_merchant_new", "merchant_risk"),
    ("card_merchant_new", "is_night"),
    ("amount_log", "card_count_1d"),
    ("amount_log", "card_count_10m"),
    ("amount_log", "card_frauds_7d"),
    ("card_count_7d", "card_merchant_new"),
    ("card_count_1h", "card_count_30d"),
    ("card_count_30d", "card_merchant_new"),
)

# Each scaled input is clamped to +-CROSS_CLAMP before it is multiplied: a heavy-tailed input
# 10 deviations out would otherwise make a product of 100 that one SGD step follows. On the
# unit-test floor's small stream (1,200 cards, 4 partitions, a model each) unclamped crosses
# took ROC AUC from 0.81 to 0.68; clamped at 2, 0.79 with average precision 0.09 -> 0.14
# (docs/quality.md "Feature crosses").
CROSS_CLAMP = 2.0
_resolved: dict[tuple[int, tuple[str, ...]],
                tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...]]] = {}


def cross_name(a: str, b: str) -> str:
    """The input a cross adds: `a*b`."""
    return f"{a}*{b}"


@dataclass(frozen=True, slots=True)
class Crossed:
    """The product of each pair of `crosses` as one more input named `a*b`, after the scaler:
    a product of two standardised inputs (each centred on its mean and clamped to
    +-`CROSS_CLAMP`), so it is large when both are far out in the directions their signs say.

    A pair naming a feature the set does not have is left out (a feature set with other
    horizons), so the default pairs never fail a configuration; the settings check configured
    pairs by name (assembly.py). It is a step of the model, so the crosses are the model's:
    the pending store, the changelog and the shared champion's feed carry the features only.

    >>> f = Crossed((("card_count_1d", "amount_log"), ("amount_log", "gone")))
    >>> f({"card_count_1d": -0.5, "amount_log": 7.0})
    {'card_count_1d': -0.5, 'amount_log': 7.0, 'card_count_1d*amount_log': -1.0}
    """

    crosses: tuple[tuple[str, str], ...]

    def __call__(self, scaled: dict[str, float]) -> dict[str, float]:
        out = dict(scaled)
        _add_crosses(out, self.resolve(tuple(scaled)))
        return out

    def resolve(self, names: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
        """The crosses a feature set can form, with their names (cached per feature set; the
        key is the pairs' identity, checked, so no call hashes the pairs)."""
        key = (id(self.crosses), names)
        hit = _resolved.get(key)
        if hit is not None and hit[0] is self.crosses:
            return hit[1]
        if len(_resolved) > 64:
            _resolved.clear()
        present = set(names)
        found = tuple((a, b, cross_name(a, b)) for a, b in self.crosses
                      if a in present and b in present)
        _resolved[key] = (self.crosses, found)
        return found


def _add_crosses(out: dict[str, float], plan: tuple[tuple[str, str, str], ...]) -> None:
    """Add each planned `a*b` to `out`, from its clamped scaled inputs (River's step and the
    step-through both call this, so their values are the same): compiled, or `_add_crosses_py`
    where it is not built or declines an input.

    >>> out = {"a": 3.0, "b": -0.5}
    >>> _add_crosses(out, (("a", "b", "a*b"),)); out
    {'a': 3.0, 'b': -0.5, 'a*b': -1.0}
    """
    if _compiled is None or _compiled.add_crosses(out, plan) is NotImplemented:
        _add_crosses_py(out, plan)


def _add_crosses_py(out: dict[str, float], plan: tuple[tuple[str, str, str], ...]) -> None:
    """`_add_crosses` in Python: the reference the compiled one is tested against."""
    c = CROSS_CLAMP
    for a, b, name in plan:
        za, zb = out[a], out[b]  # clamped by comparisons: min/max calls cost 7x here
        za = c if za > c else -c if za < -c else za
        zb = c if zb > c else -c if zb < -c else zb
        out[name] = za * zb


def compress(features: dict[str, float]) -> dict[str, float]:
    """log1p of the heavy-tailed features (counts, amounts, ratios; all >= 0), others as is.

    Runs twice per event (score, learn): the heavy names are found once per feature set.

    >>> compress({"card_count_1d": 3.0, "amount_log": 3.0, "merchant_activity_ratio": 0.0})
    {'card_count_1d': 1.3862943611198906, 'amount_log': 3.0, 'merchant_activity_ratio': 0.0}
    """
    out = dict(features)
    for name in _heavy_of(tuple(features)):
        value = out[name]
        out[name] = log1p(value) if value > 0.0 else 0.0
    return out


def preprocessing_steps(
    crosses: tuple[tuple[str, str], ...] = (),
) -> list[compose.FuncTransformer | preprocessing.StandardScaler
          | tuple[str, compose.FuncTransformer]]:
    """What every model of the zoo sees its features through (same input, fair comparison):
    compress, a scaler, then the crosses of the scaled inputs (a step named "crosses"), when
    there are any."""
    steps: list[compose.FuncTransformer | preprocessing.StandardScaler
                | tuple[str, compose.FuncTransformer]] = [
        compose.FuncTransformer(compress), preprocessing.StandardScaler()]
    if crosses:
        steps.append(("crosses", compose.FuncTransformer(Crossed(crosses))))
    return steps


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The hyper-parameters of one online logistic model.

    `fraud_weight` up-weights the rare positive class in the loss: with 1% fraud an
    unweighted SGD learner spends most updates on legitimate traffic and ranks fraud late.

    `average_days`: predictions use an exponential average of the weights over this many days
    of label time (scoring/averaged.py); 0 scores with the raw weights.

    `crosses`: pairs of features whose product is one more input (`Crossed`). They are the
    model's inputs, like the features, so they are not part of its name.
    """

    learning_rate: float = 0.005
    l2: float = 0.0
    fraud_weight: float = 5.0
    average_days: float = 3.0
    intercept_lr: float = 0.01
    clip_gradient: float = 1.0
    crosses: tuple[tuple[str, str], ...] = DEFAULT_CROSSES

    @property
    def name(self) -> str:
        """The model's identity in verdicts and metrics.

        >>> ModelSpec().name, ModelSpec(average_days=0.0).name
        ('logreg-lr0.005-w5-avg3', 'logreg-lr0.005-w5')
        """
        name = f"logreg-lr{self.learning_rate:g}-w{self.fraud_weight:g}"
        return f"{name}-avg{self.average_days:g}" if self.average_days > 0 else name


def make_model(spec: ModelSpec) -> compose.Pipeline:
    """Build an untrained compress + scaler (+ crosses) + logistic regression pipeline
    (averaged when `spec.average_days` > 0).

    >>> model = make_model(ModelSpec())
    >>> model.predict_proba_one({"amount_log": 1.0})[True]
    0.5
    """
    params: dict[str, Any] = {
        "optimizer": optim.SGD(spec.learning_rate),
        "loss": optim.losses.Log(weight_pos=spec.fraud_weight), "l2": spec.l2,
        "intercept_lr": spec.intercept_lr, "clip_gradient": spec.clip_gradient}
    regression = (AveragedLogisticRegression(spec.average_days * DAY_S, **params)
                  if spec.average_days > 0 else linear_model.LogisticRegression(**params))
    # One step name for both, so code and snapshots find the regression the same way.
    return compose.Pipeline(*preprocessing_steps(spec.crosses),
                            ("LogisticRegression", regression))


Standard = tuple[Crossed | None, preprocessing.StandardScaler, linear_model.LogisticRegression]


def _standard_steps(model: compose.Pipeline) -> Standard | None:
    """The crosses (None: none), scaler and regression of a `make_model` pipeline (compress,
    a plain scaler, `Crossed` or not, a logistic regression), or None for any other model (the
    zoo's, a snapshot's own)."""
    steps = model.steps
    if len(steps) == 3:
        first, scaler, regression = steps.values()
        crossed = None
    elif len(steps) == 4:
        first, scaler, crosses, regression = steps.values()
        if type(crosses) is not compose.FuncTransformer or type(crosses.func) is not Crossed:
            return None
        crossed = crosses.func
    else:
        return None
    if (type(first) is not compose.FuncTransformer or first.func is not compress
            or type(scaler) is not preprocessing.StandardScaler
            or not scaler.with_std or scaler.window_size is not None
            or type(regression) not in _REGRESSIONS):
        return None
    return crossed, scaler, regression


_REGRESSIONS = (linear_model.LogisticRegression, AveragedLogisticRegression)


def in_form_of(model: compose.Pipeline, fresh: compose.Pipeline) -> compose.Pipeline:
    """`model`'s learning, scored as `fresh` (a `make_model` of the configured spec) scores:
    with or without the weight average, over its time constant, with the configured
    crosses. A restored champion takes the configured form, so an upgrade (a snapshot from
    before the average or the crosses) or a changed `average_days` applies to what is already
    learned; any other shape is returned as it is.

    >>> old = make_model(ModelSpec(average_days=0.0))
    >>> learn_one(old, {"amount_log": 1.0}, True)
    >>> new = in_form_of(old, make_model(ModelSpec()))
    >>> type(new["LogisticRegression"]).__name__, score_one(new, {"amount_log": 1.0}) == score_one(
    ...     old, {"amount_log": 1.0})
    ('AveragedLogisticRegression', True)
    """
    ours, wanted = _standard_steps(model), _standard_steps(fresh)
    if ours is None or wanted is None:
        return model
    regression, (crossed, _, target) = ours[2], wanted
    changed = False
    if isinstance(target, AveragedLogisticRegression):
        if isinstance(regression, AveragedLogisticRegression):
            regression.average_s = target.average_s
        else:
            regression = AveragedLogisticRegression.from_plain(regression, target.average_s)
            changed = True
    elif isinstance(regression, AveragedLogisticRegression):
        regression = regression.to_plain()
        changed = True
    if ours[0] != crossed:  # other crosses configured: new ones start at weight 0
        changed = True
    if not changed:
        return model
    first, scaler = list(model.steps.values())[:2]
    crosses = [("crosses", compose.FuncTransformer(crossed))] if crossed else []
    return compose.Pipeline(first, scaler, *crosses, ("LogisticRegression", regression))


def _heavy_flags(names: tuple[str, ...]) -> tuple[bool, ...]:
    flags = _heavy_flag_cache.get(names)
    if flags is None:
        if len(_heavy_flag_cache) > 64:
            _heavy_flag_cache.clear()
        heavy = set(_heavy_of(names))
        flags = _heavy_flag_cache[names] = tuple(name in heavy for name in names)
    return flags


_heavy_flag_cache: dict[tuple[str, ...], tuple[bool, ...]] = {}


def _scaled(scaler: preprocessing.StandardScaler, features: dict[str, float],
            learn: bool, crossed: Crossed | None = None) -> dict[str, float]:
    """compress, then (when `learn`) the scaler's update, then its transform, in one pass;
    then the crosses of the scaled values (`crossed`).

    The same arithmetic in the same order as River's `Pipeline.learn_one` /
    `_transform_one` (FuncTransformer, `StandardScaler.learn_one`, `.transform_one`), so the
    scaler's state and the result are bit for bit River's; one loop instead of three took the
    core from 81.0 to 74.8 us per event (README "Learning from labels").

    >>> scaler = make_model(ModelSpec())["StandardScaler"]
    >>> _scaled(scaler, {"card_count_1d": 0.0}, True), _scaled(scaler, {"card_count_1d": 3.0}, True)
    ({'card_count_1d': 0.0}, {'card_count_1d': 1.0})
    """
    return _scale(scaler, tuple(features), features.values(), learn, crossed)


def _scale(scaler: preprocessing.StandardScaler, names: tuple[str, ...],
           values: Collection[float], learn: bool, crossed: Crossed | None) -> dict[str, float]:
    """`_scaled` of the features `names` valued `values` (as many, in that order): the shared
    champion learns from the feed's rows of values, which need no dict of their own first.

    Compiled (`_steps.scale`), or `_scale_py` where it is not built or declines an input (a
    value of another type, a variance Python would root as a complex): the same state and the
    same result either way. `values` is read twice when declined, so not an iterator.

    >>> scaler = make_model(ModelSpec())["StandardScaler"]
    >>> _scale(scaler, ("card_count_1d",), [3.0], True, None)
    {'card_count_1d': 0.0}
    """
    if _compiled is not None:
        out = _compiled.scale(scaler.counts, scaler.means, scaler.vars, names, values,
                              _heavy_flags(names), learn)
        if out is not NotImplemented:
            if crossed is not None:
                _add_crosses(out, crossed.resolve(names))
            return out
    return _scale_py(scaler, names, values, learn, crossed)


def _scale_py(scaler: preprocessing.StandardScaler, names: tuple[str, ...],
              values: Collection[float], learn: bool, crossed: Crossed | None) -> dict[str, float]:
    """`_scale` in Python: the reference the compiled one is tested against.

    >>> scaler = make_model(ModelSpec())["StandardScaler"]
    >>> _scale_py(scaler, ("card_count_1d",), [3.0], True, None)
    {'card_count_1d': 0.0}
    """
    means = scaler.means
    vars_ = scaler.vars
    out: dict[str, float] = {}
    flags = _heavy_flags(names)
    if learn:
        counts = scaler.counts
        for name, xi, heavy in zip(names, values, flags):  # noqa: B905 - one length (a hot loop)
            if heavy:
                xi = log1p(xi) if xi > 0.0 else 0.0
            count = counts[name] + 1
            counts[name] = count
            old_mean = means[name]
            diff = xi - old_mean
            mean = old_mean + diff / count
            means[name] = mean
            var = vars_[name]
            var += (diff * (xi - mean) - var) / count
            vars_[name] = var
            out[name] = (xi - mean) / var**0.5 if var else 0.0
    else:
        for name, xi, heavy in zip(names, values, flags):  # noqa: B905 - as above
            if heavy:
                xi = log1p(xi) if xi > 0.0 else 0.0
            var = vars_[name]
            out[name] = (xi - means[name]) / var**0.5 if var else 0.0
    if crossed is not None:
        _add_crosses(out, crossed.resolve(names))
    return out


def score_one(model: compose.Pipeline, features: dict[str, float]) -> float:
    """Probability of fraud for one feature dict; never learns.

    >>> model = make_model(ModelSpec())
    >>> learn_one(model, {"amount_log": 1.0, "card_count_1d": 3.0}, True)
    >>> score_one(model, {"amount_log": 1.0, "card_count_1d": 3.0}) == float(
    ...     model.predict_proba_one({"amount_log": 1.0, "card_count_1d": 3.0})[True])
    True
    """
    standard = _standard_steps(model)
    if standard is None:
        return float(model.predict_proba_one(features).get(True, 0.0))
    crossed, scaler, regression = standard
    return float(regression.predict_proba_one(_scaled(scaler, features, False, crossed))[True])


class FrozenScorer:
    """`score_one` for a model that no longer learns (the shared champion's epoch copies,
    which decide nearly every transaction): the scaler's means and standard deviations are
    read once per feature set instead of per transaction, with the same values and the same
    arithmetic, so the score is `score_one`'s bit for bit (tests/unit/test_model_steps.py).

    Only for a model nobody changes: a step after the first score is not seen.

    >>> model = make_model(ModelSpec())
    >>> learn_one(model, {"amount_log": 1.0}, True); learn_one(model, {"amount_log": 3.0}, False)
    >>> FrozenScorer(model)({"amount_log": 2.5}) == score_one(model, {"amount_log": 2.5})
    True
    """

    __slots__ = ("model", "_standard", "_names", "_flags", "_means", "_stds", "_plan", "_linear")

    def __init__(self, model: compose.Pipeline) -> None:
        self.model = model
        self._standard = _standard_steps(model)
        self._names: tuple[str, ...] | None = None
        self._flags: tuple[bool, ...] = ()
        self._means: list[float] = []
        self._stds: list[float] = []
        self._plan: tuple[tuple[str, str, str], ...] = ()
        self._linear: _Linear | None = None

    def __call__(self, features: dict[str, float]) -> float:
        standard = self._standard
        if standard is None:
            return score_one(self.model, features)
        names = tuple(features)
        if names != self._names:
            self._prepare(names, standard)
        linear = self._linear
        if linear is not None and _compiled is not None:
            dot = _compiled.frozen_dot(features, self._flags, self._means, self._stds,
                                       linear.weights, linear.crosses, linear.cross_weights)
            if dot is not NotImplemented:
                return float(linear.mean_func(dot + linear.intercept))
        out = NotImplemented if _compiled is None else _compiled.frozen(
            names, features.values(), self._flags, self._means, self._stds)
        if out is NotImplemented:
            out = self._frozen_py(names, features)
        if self._plan:
            _add_crosses(out, self._plan)
        return float(standard[2].predict_proba_one(out)[True])

    def _frozen_py(self, names: tuple[str, ...], features: dict[str, float]) -> dict[str, float]:
        """The scaled inputs in Python: the reference the compiled `_steps.frozen` is tested
        against."""
        out: dict[str, float] = {}
        for name, xi, heavy, mean, std in zip(  # noqa: B905 - one length (a hot loop)
                names, features.values(), self._flags, self._means, self._stds):
            if heavy:
                xi = log1p(xi) if xi > 0.0 else 0.0
            out[name] = (xi - mean) / std if std else 0.0
        return out

    def _prepare(self, names: tuple[str, ...], standard: Standard) -> None:
        crossed, scaler, _ = standard
        means, vars_ = scaler.means, scaler.vars
        self._means, self._stds = [], []
        for name in names:  # read as `_scale` reads them (defaultdicts: the same keys made)
            var = vars_[name]
            if var:  # a nonzero var never has a zero root: `if std` is `_scale`'s `if var`
                self._means.append(means[name])
                self._stds.append(var**0.5)
            else:
                self._means.append(0.0)
                self._stds.append(0.0)
        self._names = names
        self._flags = _heavy_flags(names)
        self._plan = crossed.resolve(names) if crossed is not None else ()
        self._linear = _Linear.read(standard[2], names, self._plan)


@dataclass(frozen=True, slots=True)
class _Linear:
    """An epoch copy's regression read once per feature set, for `_steps.frozen_dot`: the
    weight of each input in the order River's dot adds them (the features', then the
    crosses'), the crosses as positions of their two inputs, and what turns the sum into a
    probability. The score is `predict_proba_one`'s bit for bit
    (tests/unit/test_compiled_steps.py), without the scaled inputs' dict.

    >>> model = make_model(ModelSpec())
    >>> learn_one(model, {"amount_log": 1.0}, True)
    >>> linear = _Linear.read(model["LogisticRegression"], ("amount_log",), ())
    >>> linear.weights == [model["LogisticRegression"].scoring_weights()["amount_log"]]
    True
    """

    weights: list[float]
    crosses: tuple[tuple[int, int], ...]
    cross_weights: list[float]
    intercept: float
    mean_func: Any

    @classmethod
    def read(cls, regression: linear_model.LogisticRegression, names: tuple[str, ...],
             plan: tuple[tuple[str, str, str], ...]) -> _Linear | None:
        """None where the shortcut would not be River's arithmetic: another regression
        class, a weight not learned yet (River's dot decides what a missing one adds), a
        cross of a cross, or a cross named like an input."""
        if type(regression) is AveragedLogisticRegression:
            weights, intercept = regression.scoring_weights(), regression.average_intercept
        elif type(regression) is linear_model.LogisticRegression:
            weights, intercept = regression._weights.to_dict(), regression.intercept
        else:
            return None
        position = {name: i for i, name in enumerate(names)}
        cross_names = [name for _, _, name in plan]
        if (len(set(cross_names)) != len(cross_names) or any(n in position for n in cross_names)
                or any(a not in position or b not in position for a, b, _ in plan)
                or any(n not in weights for n in (*names, *cross_names))):
            return None
        return cls([float(weights[n]) for n in names],
                   tuple((position[a], position[b]) for a, b, _ in plan),
                   [float(weights[n]) for n in cross_names], float(intercept),
                   regression.loss.mean_func)


def learn_one(model: compose.Pipeline, features: dict[str, float], is_fraud: bool,
              weight: float = 1.0, t: float | None = None) -> None:
    """One SGD step on a labelled example (the scaler updates its statistics first); `weight`
    scales the regression's step (an importance weight, scoring/sampling.py); `t`, the label's
    time, moves an averaged regression's average (scoring/averaged.py).

    A `make_model` pipeline is stepped through directly (`_scaled`, `_regression_step`),
    exactly as River's `Pipeline.learn_one` would; any other model (the zoo's) through River's.

    >>> model = make_model(ModelSpec())
    >>> learn_one(model, {"amount_log": 1.0}, True, t=0.0)
    >>> model["StandardScaler"].counts["amount_log"], model["LogisticRegression"].intercept
    (1, 0.01)
    """
    standard = _standard_steps(model)
    if standard is None:
        params: dict[str, float] = {} if weight == 1.0 else {"w": weight}
        if t is not None and isinstance(next(reversed(model.steps.values())),
                                        AveragedLogisticRegression):
            params["t"] = t
        model.learn_one(features, is_fraud, **params)
        return
    crossed, scaler, regression = standard
    _regression_step(regression, _scaled(scaler, features, True, crossed), is_fraud, weight, t)


def learn_values(model: compose.Pipeline, names: tuple[str, ...], values: Sequence[float],
                 is_fraud: bool, t: float | None = None) -> None:
    """`learn_one` on the features `names` valued `values` (as many): the shared champion's
    rows, learned without a dict of their own first.

    >>> model, twin = make_model(ModelSpec()), make_model(ModelSpec())
    >>> learn_values(model, ("amount_log",), [1.0], True, t=0.0)
    >>> learn_one(twin, {"amount_log": 1.0}, True, t=0.0)
    >>> model["LogisticRegression"].weights == twin["LogisticRegression"].weights
    True
    """
    if len(names) != len(values):
        raise ValueError(f"{len(values)} values for {len(names)} features")
    standard = _standard_steps(model)
    if standard is None:
        learn_one(model, dict(zip(names, values, strict=True)), is_fraud, t=t)
        return
    crossed, scaler, regression = standard
    _regression_step(regression, _scale(scaler, names, values, True, crossed), is_fraud, 1.0, t)


def _regression_step(regression: linear_model.LogisticRegression, x: dict[str, float],
                     is_fraud: bool, weight: float, t: float | None) -> None:
    """The regression's step on scaled inputs: River's, or (plain SGD, no L1) the same
    operations on the same objects without its layers of calls (`_sgd_step`); then an
    averaged regression's average moves to `t`."""
    if type(regression.optimizer) is optim.SGD and regression.l1 == 0.0:
        _sgd_step(regression, x, is_fraud, weight)
        if type(regression) is AveragedLogisticRegression:
            regression.follow(t)
    elif type(regression) is AveragedLogisticRegression:
        regression.learn_one(x, is_fraud, weight, t)
    else:
        regression.learn_one(x, is_fraud, weight)


def _sgd_step(regression: linear_model.LogisticRegression, x: dict[str, float], y: bool,
              w: float) -> None:
    """River's `GLM.learn_one` for an SGD optimiser and no L1 penalty, unrolled: its
    `_fit`, `_eval_gradient_one`, `_raw_dot_one`, `Optimizer.step` and
    `SGD._step_with_vector`, call for call on the same `VectorDict`s (masked to `x`, as
    River masks them) and float for float, so the weights and the intercept are River's bit
    for bit (tests/unit/test_model_steps.py); 6.6 -> 5.4 us a step on the bench's features
    (docs/benchmark.md, "The learning step and the epoch copies").

    >>> from river import linear_model, optim
    >>> ours, rivers = (linear_model.LogisticRegression(optim.SGD(0.1)) for _ in range(2))
    >>> _sgd_step(ours, {"x": 2.0}, True, 1.0); rivers.learn_one({"x": 2.0}, True)
    >>> ours.weights == rivers.weights, ours.intercept == rivers.intercept
    (True, True)
    """
    saved = regression._weights
    weights = regression._weights = VectorDict(saved, regression.initializer, x)
    try:
        optimizer = regression.optimizer
        gradient = regression.loss.gradient(y_true=y, y_pred=weights.dot(x)
                                            + regression.intercept)
        gradient *= w
        clip = regression.clip_gradient
        lowest = -clip
        gradient = clip if clip < gradient else gradient  # River's clamp: max(min(g, c), -c)
        gradient = float(lowest if lowest > gradient else gradient)
        step = VectorDict.from_scaled(x, gradient)
        if regression.l2:
            step.iadd_scaled(weights, regression.l2)
        regression.intercept -= regression.intercept_lr.get(optimizer.n_iterations) * gradient
        weights.isub_scaled(step, optimizer.learning_rate)
        optimizer.n_iterations += 1
    finally:
        regression._weights = saved


def top_contributions(
    model: compose.Pipeline, features: dict[str, float], k: int
) -> dict[str, float]:
    """The k features that pushed the log-odds most, signed, for the analyst reading a verdict."""
    if k <= 0:
        return {}
    *preprocess, regression = model.steps.values()
    scaled = features
    for step in preprocess:
        scaled = step.transform_one(scaled)
    weights = (regression.scoring_weights() if isinstance(regression, AveragedLogisticRegression)
               else regression.weights)
    terms = {name: weights.get(name, 0.0) * value for name, value in scaled.items()}
    ranked = sorted(terms.items(), key=lambda item: abs(item[1]), reverse=True)[:k]
    return {name: round(value, 6) for name, value in ranked}
