"""How the champion's feature crosses were chosen, rerunnable (scoring/model.py DEFAULT_CROSSES).

A logistic model adds up evidence; the weekly gradient-boosted trees find conjunctions of
features as well. This ranks every pair of the champion's decision-time features by how much
a sparse batch model wants their product: the features are compressed and standardised as the
champion sees them, every pairwise product is added, and an L1-penalised logistic regression
is fitted on the quality protocol's training window only (transactions of days 7-28 whose
label had arrived by the test week; the test week is never looked at). The pairs are ranked
by the size of their weight. Then, still in batch, a logistic regression on the features plus
the top k pairs is trained and tested as `batch_logreg` is, for a few k.

    python -m benchmarks.quality.crosses               # seed 7, the default stream
    python -m benchmarks.quality.crosses --seed 11     # another stream, to check the choice
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.quality.batch import Protocol, train_and_score
from benchmarks.quality.dataset import build
from benchmarks.quality.learners import STREAM, record
from benchmarks.quality.metrics import figures
from stream.core.scoring.model import DEFAULT_CROSSES, compress

Pair = tuple[int, int]


def standardised_inputs(names: tuple[str, ...], rows: list[dict[str, float]]) -> np.ndarray:
    """The features as the champion sees them: compressed, then standardised (batch)."""
    x = np.array([[c[n] for n in names] for c in map(compress, rows)])
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)


def products(z: np.ndarray, pairs: list[Pair]) -> np.ndarray:
    """One column per pair: the product of its two columns of `z`.

    >>> products(np.array([[1.0, 2.0, 3.0]]), [(0, 2), (1, 2)]).tolist()
    [[3.0, 6.0]]
    """
    if not pairs:
        return np.empty((len(z), 0))
    return np.stack([z[:, i] * z[:, j] for i, j in pairs], axis=1)


def rank_pairs(z: np.ndarray, y: np.ndarray, c: float = 0.01) -> list[tuple[Pair, float]]:
    """Every pair of columns with a non-zero L1 weight on its product, largest weight first."""
    pairs = list(itertools.combinations(range(z.shape[1]), 2))
    full = StandardScaler().fit_transform(np.hstack([z, products(z, pairs)]))
    fit = LogisticRegression(penalty="l1", C=c, solver="liblinear", max_iter=2000).fit(full, y)
    weights = fit.coef_[0][z.shape[1]:]
    order = np.argsort(-np.abs(weights), kind="stable")
    return [(pairs[k], float(weights[k])) for k in order if weights[k] != 0.0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.crosses")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--show", type=int, default=20, help="how many ranked pairs to print")
    args = p.parse_args(argv)
    data = build(STREAM(args.seed))
    trace = record(data)
    protocol = Protocol(21.0, 7.0, 7.0)
    test_from, test_to = protocol.test_window(data)
    lo, hi = protocol.train_window(test_from)
    label_time = np.array(data.label_time)
    train = (data.times >= lo) & (data.times < hi) & (label_time <= test_from)
    z = standardised_inputs(trace.names, trace.rows)
    ranked = rank_pairs(z[train], data.fraud[train])
    names = trace.names
    default = set(DEFAULT_CROSSES)
    print(f"{len(ranked)} pairs with a non-zero weight; the first {args.show} "
          "(* = in DEFAULT_CROSSES):")
    for (i, j), weight in ranked[:args.show]:
        mark = "*" if (names[i], names[j]) in default else " "
        print(f"  {mark} {names[i]} * {names[j]}  {weight:+.3f}")
    idx, holdout = data.holdout(test_from, test_to)
    print(f"\n{'batch logistic regression':<34} {'ROC AUC':>8} {'avg prec':>9} {'card P@100':>10}")
    for k in (0, 10, 20, 40):
        x = np.hstack([z, products(z, [pair for pair, _ in ranked[:k]])])
        scores = train_and_score(data, x, protocol, lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=3000, C=0.1)))
        f = figures(holdout, scores[idx], 100, 0.2)
        print(f"{f'features + top {k} pairs':<34} {f.roc_auc:>8.4f} {f.average_precision:>9.4f} "
              f"{f.card_precision_at_k:>10.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
