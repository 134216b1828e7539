"""The River model: feature scaling followed by online logistic regression.

One factory builds every model (champion, challengers, one-off training), so serving and
training cannot drift apart in how the model is put together.
"""

from __future__ import annotations

from dataclasses import dataclass

from river import compose, linear_model, optim, preprocessing


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The hyper-parameters of one online logistic model.

    `fraud_weight` up-weights the rare positive class in the loss: with 1% fraud an
    unweighted SGD learner spends most updates on legitimate traffic and ranks fraud late.
    """

    learning_rate: float = 0.02
    l2: float = 0.0
    fraud_weight: float = 5.0
    intercept_lr: float = 0.01

    @property
    def name(self) -> str:
        return f"logreg-lr{self.learning_rate:g}-w{self.fraud_weight:g}"


def make_model(spec: ModelSpec) -> compose.Pipeline:
    """Build an untrained scaler + logistic regression pipeline.

    >>> model = make_model(ModelSpec())
    >>> model.predict_proba_one({"amount_log": 1.0})[True]
    0.5
    """
    regression = linear_model.LogisticRegression(
        optimizer=optim.SGD(spec.learning_rate),
        loss=optim.losses.Log(weight_pos=spec.fraud_weight),
        l2=spec.l2,
        intercept_lr=spec.intercept_lr,
    )
    return compose.Pipeline(preprocessing.StandardScaler(), regression)


def score_one(model: compose.Pipeline, features: dict[str, float]) -> float:
    """Probability of fraud for one feature dict; never learns."""
    return float(model.predict_proba_one(features).get(True, 0.0))


def learn_one(model: compose.Pipeline, features: dict[str, float], is_fraud: bool) -> None:
    """One SGD step on a labelled example (the scaler updates its statistics first)."""
    model.learn_one(features, is_fraud)


def top_contributions(
    model: compose.Pipeline, features: dict[str, float], k: int
) -> dict[str, float]:
    """The k features that pushed the log-odds most, signed, for the analyst reading a verdict."""
    if k <= 0:
        return {}
    scaler, regression = model.steps.values()
    scaled = scaler.transform_one(features)
    weights = regression.weights
    terms = {name: weights.get(name, 0.0) * value for name, value in scaled.items()}
    ranked = sorted(terms.items(), key=lambda item: abs(item[1]), reverse=True)[:k]
    return {name: round(value, 6) for name, value in ranked}
