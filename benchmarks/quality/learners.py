"""Candidate online learners on the champion's own decision-time features, in its own order.

Features do not depend on the model, so one 1-partition pass records every transaction's
decision-time features and the order in which the scorer scores and learns; each candidate
then replays that order (score each transaction, learn each label when it arrives) and is
judged on the test week like the champion. That isolates the learner from the features: this
is how the champion's inputs and optimiser were chosen (docs/quality.md).

    python -m benchmarks.quality.learners                 # every candidate
    python -m benchmarks.quality.learners sgd0.005-clip   # some of them
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import compose, linear_model, optim, preprocessing

from benchmarks.quality.batch import Protocol
from benchmarks.quality.dataset import Dataset, build
from benchmarks.quality.metrics import figures
from benchmarks.quality.online import run_online
from stream.contracts.messages import Transaction
from stream.contracts.partitioning import consumed_order
from stream.core.scoring.model import (
    DEFAULT_CROSSES,
    ModelSpec,
    compress,
    learn_one,
    make_model,
    score_one,
)
from stream.devtools.synthetic import TrafficConfig, parse_scenarios

Step = tuple[bool, int, bool, float]  # (learn?, transaction index, label, label time)


@dataclass(frozen=True)
class Trace:
    """Decision-time features (rows in dataset order) and the score/learn order."""

    names: tuple[str, ...]
    rows: list[dict[str, float]]
    steps: list[Step]


def record(data: Dataset) -> Trace:
    """One 1-partition pass for the features; the order follows `consumed_order`, with a
    label that overtook its transaction learned right after that transaction is scored."""
    run = run_online(data, 1, keep_features=True, warmup_labels=0)
    assert run.features is not None
    rows = [dict(zip(run.feature_names, r, strict=True)) for r in run.features.tolist()]
    steps: list[Step] = []
    scored: set[int] = set()
    early: dict[int, tuple[bool, float]] = {}
    for _, item in consumed_order(data.items, 1):
        if isinstance(item, Transaction):
            i = data.index[item.transaction_id]
            steps.append((False, i, False, item.timestamp))
            scored.add(i)
            if i in early:
                steps.append((True, i, *early.pop(i)))
            continue
        j = data.index.get(item.transaction_id)
        if j is None:
            continue
        if j in scored:
            steps.append((True, j, item.is_fraud, item.timestamp))
        else:
            early[j] = (item.is_fraud, item.timestamp)
    return Trace(run.feature_names, rows, steps)


def champion(spec: ModelSpec) -> Callable[[], compose.Pipeline]:
    return lambda: make_model(spec)


def logreg(optimizer: Callable[[], optim.base.Optimizer], clip: float = 1e12,
           weight: float = 5.0, squash: bool = False) -> Callable[[], compose.Pipeline]:
    def make() -> compose.Pipeline:
        regression = linear_model.LogisticRegression(
            optimizer=optimizer(), loss=optim.losses.Log(weight_pos=weight),
            clip_gradient=clip, intercept_lr=0.01)
        steps: list[Any] = [compose.FuncTransformer(compress)] if squash else []
        return compose.Pipeline(*steps, preprocessing.StandardScaler(), regression)
    return make


CANDIDATES: dict[str, Callable[[], compose.Pipeline]] = {
    "sgd0.02": logreg(lambda: optim.SGD(0.02)),  # the champion before issue 12
    "sgd0.02-clip": logreg(lambda: optim.SGD(0.02), clip=1.0),
    "sgd0.02-log": logreg(lambda: optim.SGD(0.02), squash=True),
    "sgd0.02-log-clip": logreg(lambda: optim.SGD(0.02), clip=1.0, squash=True),
    "sgd0.005-log-clip": logreg(lambda: optim.SGD(0.005), clip=1.0, squash=True),  # until 2026-12
    "sgd0.002-log-clip": logreg(lambda: optim.SGD(0.002), clip=1.0, squash=True),
    "sgd0.005-log-clip-w2": logreg(lambda: optim.SGD(0.005), clip=1.0, weight=2.0,
                                   squash=True),
    "sgd0.005-log-clip-w10": logreg(lambda: optim.SGD(0.005), clip=1.0, weight=10.0,
                                    squash=True),
    "adagrad0.05-log": logreg(lambda: optim.AdaGrad(0.05), squash=True),
    "adam0.01-log": logreg(lambda: optim.Adam(0.01), squash=True),
    # Scored with an average of the weights over days of label time (scoring/averaged.py);
    # the champion until the feature crosses.
    "sgd0.005-log-clip-avg3": champion(ModelSpec(learning_rate=0.005, average_days=3.0,
                                                 crosses=())),
    "sgd0.005-log-clip-avg1": champion(ModelSpec(learning_rate=0.005, average_days=1.0,
                                                 crosses=())),
    "sgd0.005-log-clip-avg7": champion(ModelSpec(learning_rate=0.005, average_days=7.0,
                                                 crosses=())),
    "sgd0.01-log-clip-avg3": champion(ModelSpec(learning_rate=0.01, average_days=3.0,
                                                crosses=())),
    "sgd0.01-log-clip": champion(ModelSpec(learning_rate=0.01, average_days=0.0, crosses=())),
    # With the feature crosses (scoring/model.py DEFAULT_CROSSES): the champion, and the same
    # with the first 10 pairs only.
    "sgd0.005-log-clip-avg3-x20": champion(ModelSpec()),
    "sgd0.005-log-clip-avg3-x10": champion(ModelSpec(crosses=DEFAULT_CROSSES[:10])),
}


def STREAM(seed: int) -> TrafficConfig:  # noqa: N802 - the stream, named like a constant
    """The stream the learners are compared on: `make quality`'s, six weeks."""
    return TrafficConfig(None, days=42.0, fraud_rate=0.008, seed=seed, n_cards=10_000,
                         n_merchants=5_000, mean_tx_per_card_per_day=1.0,
                         scenarios=parse_scenarios("realistic"))


def replay(trace: Trace, make: Callable[[], compose.Pipeline]) -> np.ndarray:
    """Decision-time scores of a fresh model fed the trace."""
    model = make()
    scores = np.full(len(trace.rows), np.nan)
    rows = trace.rows
    for learn, i, label, t in trace.steps:
        if learn:
            learn_one(model, rows[i], label, t=t)
        else:
            scores[i] = score_one(model, rows[i])
    return scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.learners")
    p.add_argument("names", nargs="*", help=f"candidates (default all): {', '.join(CANDIDATES)}")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate(s): {', '.join(unknown)}")
    data = build(STREAM(args.seed))
    trace = record(data)
    idx, holdout = data.holdout(*Protocol(21.0, 7.0, 7.0).test_window(data))
    print(f"{'candidate':<24} {'ROC AUC':>8} {'avg prec':>9} {'card P@100':>10} {'s':>5}")
    for name in args.names or CANDIDATES:
        started = time.perf_counter()
        f = figures(holdout, replay(trace, CANDIDATES[name])[idx], 100, 0.2)
        print(f"{name:<24} {f.roc_auc:>8.4f} {f.average_precision:>9.4f} "
              f"{f.card_precision_at_k:>10.4f} {time.perf_counter() - started:>5.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
