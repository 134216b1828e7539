"""Drift fires on a synthetic shift and stays quiet on a stationary stream."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from stream.core.evaluation.drift import LossDrift, ScorePSI


def _labelled(n: int, rng: random.Random, fraud_rate: float, skill: float) -> list[
        tuple[bool, float]]:
    """A model that ranks a fraud high with probability `skill`."""
    out = []
    for _ in range(n):
        y = rng.random() < fraud_rate
        if y and rng.random() < skill:
            score = rng.betavariate(6, 2)
        else:
            score = rng.betavariate(1.2, 14)
        out.append((y, score))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_loss_drift_is_quiet_on_a_stationary_stream(seed: int) -> None:
    rng = random.Random(seed)
    detector = LossDrift(partition=3)
    fired = []
    for i, (y, score) in enumerate(_labelled(20_000, rng, 0.02, 0.9)):
        detector.update(y, score, at=float(i))
        if detector.detected:
            fired.append(detector.detected)
    assert fired == []
    assert 0 < detector.mean_loss < 1


@pytest.mark.parametrize("seed", range(5))
def test_loss_drift_fires_soon_after_the_model_degrades(seed: int) -> None:
    rng = random.Random(seed)
    stream = _labelled(10_000, rng, 0.02, 0.9) + _labelled(5_000, rng, 0.1, 0.3)
    detector = LossDrift(partition=3)
    fired = []
    for i, (y, score) in enumerate(stream):
        detector.update(y, score, at=1_700_000_000.0 + i)
        if detector.detected:
            fired.append(detector.detected)
    assert fired, "no drift detected"
    first = fired[0]
    assert first.kind == "loss" and first.partition == 3 and first.direction == "up"
    assert 1_700_010_000.0 <= first.at < 1_700_010_500.0  # within 500 labels of the change
    assert first.value > first.reference


def _numpy_psi(reference: list[float], recent: list[float], bins: int = 10) -> float:
    """PSI written out independently: decile edges of the reference, floor of 1e-4."""
    ordered = np.sort(reference)
    n = len(ordered)
    edges = np.unique([ordered[min(n - 1, (n * i) // bins)] for i in range(1, bins)])
    expected = np.bincount(np.searchsorted(edges, reference, side="right"),
                           minlength=len(edges) + 1) / len(reference)
    actual = np.bincount(np.searchsorted(edges, recent, side="right"),
                         minlength=len(edges) + 1) / len(recent)
    e, a = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def test_psi_equals_a_batch_recomputation() -> None:
    rng = random.Random(5)
    reference = [rng.betavariate(2, 9) for _ in range(2000)]
    recent = [rng.betavariate(3, 7) for _ in range(1500)]
    monitor = ScorePSI(reference_size=2000, window=1500, check_every=1)
    for score in reference + recent:
        monitor.update(score, 0.0)
    assert monitor.value == pytest.approx(_numpy_psi(reference, recent), rel=1e-12)


def test_psi_warms_up_then_fires_once_on_a_shift_and_rearms() -> None:
    rng = random.Random(11)
    monitor = ScorePSI(reference_size=3000, window=2000, warmup=500, check_every=100,
                       partition=1)
    for i in range(500):  # a cold model: every score 0.5, must not become the reference
        monitor.update(0.5, float(i))
    assert math.isnan(monitor.value)
    fired = []
    t = 500
    for phase, (a, b, n) in enumerate([(2, 9, 10_000), (5, 5, 6_000), (2, 9, 6_000),
                                       (5, 5, 6_000)]):
        for _ in range(n):
            monitor.update(rng.betavariate(a, b), float(t))
            if monitor.detected:
                fired.append((phase, monitor.detected))
            t += 1
        if phase == 0:
            assert monitor.value < 0.05  # stationary: quiet, and close to zero
    assert [phase for phase, _ in fired] == [1, 3]
    event = fired[0][1]
    assert event.kind == "psi" and event.partition == 1 and event.value > 0.25
    assert event.reference == 0.25 and 10_500 <= event.at < 13_000


def test_psi_rebase_makes_the_new_normal_the_reference() -> None:
    rng = random.Random(2)
    monitor = ScorePSI(reference_size=1000, window=1000, check_every=50)
    for i in range(2000):
        monitor.update(rng.betavariate(2, 9), float(i))
    for i in range(2000):
        monitor.update(rng.betavariate(5, 5), float(i))
    assert monitor.value > 0.25
    monitor.rebase()
    assert math.isnan(monitor.value)
    fired = 0
    for i in range(3000):
        monitor.update(rng.betavariate(5, 5), float(i))
        fired += monitor.detected is not None
    assert fired == 0 and monitor.value < 0.1
