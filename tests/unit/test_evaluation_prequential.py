"""Every prequential metric against scikit-learn (or numpy) on the same window of scores."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn import metrics as sk

from stream.core.evaluation import curves
from stream.core.evaluation.prequential import Prequential


def _stream(n: int, seed: int = 1, ties: bool = False) -> list[tuple[bool, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < 0.08
        score = min(1.0, max(0.0, rng.betavariate(2, 5) + (0.35 if y else 0.0)))
        out.append((y, round(score, 2) if ties else score))
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_batch_curves_match_scikit_learn(ties: bool) -> None:
    pairs = _stream(3000, seed=4, ties=ties)
    y = [p[0] for p in pairs]
    s = [p[1] for p in pairs]
    assert curves.roc_curve(pairs).area == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert curves.average_precision(curves.ranking(pairs)) == pytest.approx(
        sk.average_precision_score(y, s), abs=1e-12)
    assert curves.log_loss(pairs) == pytest.approx(sk.log_loss(y, s), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    roc = curves.roc_curve(pairs)
    assert np.allclose(roc.x, fpr) and np.allclose(roc.y, tpr)
    precision, recall, _ = sk.precision_recall_curve(y, s, drop_intermediate=False)
    pr = curves.pr_curve(pairs)  # scikit-learn lists it from the lowest threshold up
    assert np.allclose(pr.x[1:], recall[::-1][1:]) and np.allclose(pr.y[1:], precision[::-1][1:])
    for threshold in (0.2, 0.6, 0.99):
        alerts = [v >= threshold for v in s]
        expected = (sk.precision_score(y, alerts, zero_division=np.nan),
                    sk.recall_score(y, alerts, zero_division=np.nan),
                    sk.f1_score(y, alerts, zero_division=np.nan))
        got = curves.confusion_rates(pairs, threshold)
        assert np.allclose(got, expected, equal_nan=True), threshold


def test_undefined_metrics_are_nan_not_zero() -> None:
    assert math.isnan(curves.roc_curve([(True, 0.3), (True, 0.9)]).area)
    assert math.isnan(curves.average_precision(curves.ranking([(False, 0.3)])))
    assert math.isnan(curves.roc_auc(curves.ranking([])))
    assert math.isnan(curves.log_loss([]))
    precision, recall, f1 = curves.rates(0, 0, 0)
    assert math.isnan(precision) and math.isnan(recall) and math.isnan(f1)


@pytest.mark.parametrize("ties", [False, True])
def test_rolling_metrics_equal_a_batch_recomputation_of_the_window(ties: bool) -> None:
    window = 500
    pairs = _stream(2200, seed=7, ties=ties)
    ev = Prequential(window=window, review_threshold=0.2, decline_threshold=0.6)
    for i, (y, score) in enumerate(pairs):
        ev.update(y, score)
        if i in (120, 499, 1377, 2199):
            last = pairs[max(0, i + 1 - window):i + 1]
            ys = [p[0] for p in last]
            ss = [p[1] for p in last]
            snap = ev.summary()
            assert snap.window_labels == len(last)
            assert snap.roc_auc == pytest.approx(sk.roc_auc_score(ys, ss), abs=1e-12)
            assert snap.pr_auc == pytest.approx(sk.average_precision_score(ys, ss), abs=1e-12)
            assert snap.log_loss == pytest.approx(sk.log_loss(ys, ss, labels=[False, True]),
                                                  abs=1e-9)
            for name, threshold in (("review", 0.2), ("decline", 0.6)):
                alerts = [v >= threshold for v in ss]
                rates = snap.rates(name)
                assert rates.threshold == threshold
                assert rates.precision == pytest.approx(
                    sk.precision_score(ys, alerts, zero_division=np.nan), nan_ok=True)
                assert rates.recall == pytest.approx(sk.recall_score(ys, alerts), nan_ok=True)
                assert rates.f1 == pytest.approx(sk.f1_score(ys, alerts), nan_ok=True)
    assert ev.summary().labels == len(pairs)
    assert ev.summary().positives == sum(p[0] for p in pairs)


def test_alert_rate_label_rate_and_label_delay() -> None:
    rng = random.Random(3)
    ev = Prequential(window=200, review_threshold=0.3)
    scores = [rng.random() for _ in range(1000)]
    delays = []
    for i, score in enumerate(scores):
        ev.observe_decision(score)
        if i % 4 == 0:  # a quarter of the decisions get a label, some days later
            delay = rng.expovariate(1 / 86400.0)
            delays.append(delay)
            ev.update(i % 8 == 0, score, decided_at=1000.0 + i, labelled_at=1000.0 + i + delay)
    snap = ev.summary()
    assert snap.decisions == 1000 and snap.labels == 250
    assert snap.alert_rate == pytest.approx(np.mean([s >= 0.3 for s in scores[-200:]]))
    assert snap.label_rate == pytest.approx(0.25)
    recent = delays[-200:]
    assert snap.label_delay_mean_s == pytest.approx(np.mean(recent))
    assert snap.label_delay_p50_s == pytest.approx(np.quantile(recent, 0.5))
    assert snap.label_delay_p90_s == pytest.approx(np.quantile(recent, 0.9))


def test_an_empty_evaluation_reports_nan() -> None:
    snap = Prequential(window=50).summary()
    assert snap.labels == 0 and snap.decisions == 0
    for value in (snap.roc_auc, snap.log_loss, snap.pr_auc, snap.alert_rate, snap.label_rate,
                  snap.label_delay_mean_s, snap.rates("review").precision,
                  snap.rates("unknown").f1):
        assert math.isnan(value)


def test_reads_have_no_side_effects() -> None:
    ev = Prequential(window=100)
    for y, score in _stream(300, seed=2):
        ev.observe_decision(score)
        ev.update(y, score)
    assert ev.summary() == ev.summary()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ranking_is_the_same_for_any_order_of_the_pairs(seed: int) -> None:
    # The window's read sorts its ring lists unstably, in whatever order they lie.
    pairs = _stream(2000, seed=seed, ties=True)
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    a = curves.ranking(pairs)
    b = curves.ranking_of(np.array([p[0] for p in shuffled]), np.array([p[1] for p in shuffled]))
    for left, right in ((a.tps, b.tps), (a.fps, b.fps), (a.thresholds, b.thresholds)):
        assert left.tolist() == right.tolist()


def test_a_read_after_every_label_sees_that_label() -> None:
    # A read with no label since the last reuses its areas; one after a label must not.
    pairs = _stream(400, seed=5)
    ev = Prequential(window=64)
    for i, (y, score) in enumerate(pairs):
        ev.update(y, score)
        last = pairs[max(0, i - 63):i + 1]
        ys = [p[0] for p in last]
        if 0 < sum(ys) < len(ys):
            expected = sk.roc_auc_score(ys, [p[1] for p in last])
            assert ev.summary().roc_auc == pytest.approx(expected, abs=1e-12), i
            assert ev.summary().roc_auc == pytest.approx(expected, abs=1e-12), i


def test_log_loss_on_read_equals_rivers_rolling_log_loss() -> None:
    """The window's log loss is computed when read; River's rolling LogLoss, which it
    replaced on the per-label path, is the reference (scores of exactly 0 and 1 included:
    both clamp them to 1e-15 from the ends)."""
    from river import metrics, utils

    window = 300
    pairs = [*_stream(1000, seed=3), (True, 0.0), (False, 1.0), (True, 1.0), (False, 0.0)]
    ev = Prequential(window=window)
    rolling = utils.Rolling(metrics.LogLoss, window_size=window)
    for i, (y, score) in enumerate(pairs):
        ev.update(y, score)
        rolling.update(y, score)
        if i in (0, 299, 300, 777, len(pairs) - 3, len(pairs) - 1):
            assert ev.summary().log_loss == pytest.approx(rolling.get(), rel=1e-9), i
