"""Challenger models, named by a short spec string so a config file can list them.

A challenger name is a family followed by dash-separated parameters, and the name is the
model's identity everywhere (metrics label, verdict `challengers` field, log lines):

- `logreg[-<optimiser>][-lr<float>][-w<float>][-l2<float>][-avg<days>]`: logistic
  regression, like the champion, with another optimiser (`sgd`, `adam`, `adagrad`,
  `rmsprop`), learning rate, fraud class weight, L2 penalty or weight average (SGD only;
  `avg0`: score with the raw weights; scoring/averaged.py). `logreg-lr0.005-w5-avg3` is
  exactly the default champion. Every challenger sees the champion's inputs, its feature
  crosses included (scoring/model.py `Crossed`).
- `alma`: River's approximate large-margin classifier (a different linear learner).
- `hoeffding[-g<int>]`: a Hoeffding tree (non-linear, grace period g); `hat[-g<int>]`, its
  adaptive variant that replaces branches when the data drifts.
- `gnb`: Gaussian naive Bayes.

Every model gets the same StandardScaler front, so all of them see identical inputs and a
promoted challenger drops into the champion's place without any other change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from river import base, compose, linear_model, naive_bayes, optim, tree

from stream.core.scoring.model import DEFAULT_CROSSES, ModelSpec, make_model, preprocessing_steps
from stream.errors import ConfigError

FAMILIES = ("logreg", "alma", "hoeffding", "hat", "gnb")
OPTIMISERS = ("sgd", "adam", "adagrad", "rmsprop")
_LOGREG_DEFAULTS = ModelSpec()


class ChallengerSpecError(ConfigError):
    """A challenger name that does not parse; the message lists what would."""


@dataclass(frozen=True, slots=True)
class ChallengerSpec:
    """A parsed challenger name: a family and its parameters (unset ones use defaults)."""

    family: str
    params: dict[str, float | str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The canonical spelling (parameters in a fixed order, numbers as `%g`)."""
        parts = [self.family]
        if "opt" in self.params and self.params["opt"] != "sgd":
            parts.append(str(self.params["opt"]))
        for key in ("lr", "w", "l2", "avg", "g"):
            if key in self.params:
                parts.append(f"{key}{float(self.params[key]):g}")
        return "-".join(parts)


def parse_challenger(text: str) -> ChallengerSpec:
    """Parse a challenger name.

    >>> parse_challenger("logreg-adam-lr0.01").name
    'logreg-adam-lr0.01'
    >>> parse_challenger("hoeffding-g100").params
    {'g': 100.0}
    """
    family, *tokens = text.strip().lower().split("-")
    if family not in FAMILIES:
        raise ChallengerSpecError(
            f"unknown challenger family {family!r} in {text!r}; expected one of "
            f"{', '.join(FAMILIES)} (e.g. logreg-adam-lr0.01, hoeffding, gnb)")
    allowed = {"logreg": ("lr", "w", "l2", "avg"), "hoeffding": ("g",),
               "hat": ("g",)}.get(family, ())
    params: dict[str, float | str] = {}
    for token in tokens:
        if family == "logreg" and token in OPTIMISERS:
            params["opt"] = token
            continue
        key = next((k for k in sorted(allowed, key=len, reverse=True)
                    if token.startswith(k)), None)
        try:
            if key is None:
                raise ValueError
            value = float(token[len(key):])
            if value < 0 or (key in ("lr", "w", "g") and value == 0):
                raise ValueError
        except ValueError:
            hint = ", ".join(allowed) + (", an optimiser" if family == "logreg" else "")
            raise ChallengerSpecError(
                f"bad parameter {token!r} in challenger {text!r}; {family} takes: "
                f"{hint or 'no parameters'}") from None
        params[key] = value
    return ChallengerSpec(family, params)


def _optimiser(name: str, lr: float) -> optim.base.Optimizer:
    if name == "adam":
        return optim.Adam(lr)
    if name == "adagrad":
        return optim.AdaGrad(lr)
    if name == "rmsprop":
        return optim.RMSProp(lr)
    return optim.SGD(lr)


def make_challenger(spec: ChallengerSpec,
                    crosses: tuple[tuple[str, str], ...] = DEFAULT_CROSSES) -> compose.Pipeline:
    """Build an untrained model for a spec, over the champion's inputs (`crosses`: its
    feature crosses).

    >>> model = make_challenger(parse_challenger("gnb"))
    >>> list(model.steps)
    ['compress', 'StandardScaler', 'crosses', 'GaussianNB']
    """
    p = spec.params
    if spec.family == "logreg":
        lr = float(p.get("lr", _LOGREG_DEFAULTS.learning_rate))
        w = float(p.get("w", _LOGREG_DEFAULTS.fraud_weight))
        l2 = float(p.get("l2", _LOGREG_DEFAULTS.l2))
        default_avg = _LOGREG_DEFAULTS.average_days
        opt = str(p.get("opt", "sgd"))
        if opt == "sgd":  # the champion's own factory: same params, same model, bit for bit
            return make_model(ModelSpec(lr, l2, w, float(p.get("avg", default_avg)),
                                        crosses=crosses))
        regression = linear_model.LogisticRegression(
            optimizer=_optimiser(opt, lr), loss=optim.losses.Log(weight_pos=w), l2=l2,
            intercept_lr=_LOGREG_DEFAULTS.intercept_lr,
            clip_gradient=_LOGREG_DEFAULTS.clip_gradient)
        return compose.Pipeline(*preprocessing_steps(crosses), regression)
    estimator: base.Classifier
    if spec.family == "alma":
        estimator = linear_model.ALMAClassifier()
    elif spec.family in ("hoeffding", "hat"):
        grace = int(p.get("g", 200))
        estimator = (tree.HoeffdingTreeClassifier(grace_period=grace) if spec.family == "hoeffding"
                     else tree.HoeffdingAdaptiveTreeClassifier(grace_period=grace, seed=0))
    else:
        estimator = naive_bayes.GaussianNB()
    return compose.Pipeline(*preprocessing_steps(crosses), estimator)


def challenger_names(texts: Sequence[str], champion: str) -> list[str]:
    """Validate a configured list: canonical names, no duplicates, not the champion itself."""
    names: list[str] = []
    for text in texts:
        name = parse_challenger(text).name
        if name == champion:
            raise ChallengerSpecError(f"challenger {text!r} is the champion model itself")
        if name in names:
            raise ChallengerSpecError(f"challenger {text!r} is listed twice")
        names.append(name)
    return names
