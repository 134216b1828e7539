"""Reference window estimators against batch recomputation, and the feature modules' doctests."""

from __future__ import annotations

import doctest
import math
import random
import statistics

import pytest
from river import stats

import stream.core.features.extractor
import stream.core.features.store
import stream.core.features.timeofday
import stream.core.features.windows
from stream.core.features.windows import DecayedWindow, RunningMoments

REL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


@pytest.mark.parametrize(
    "module",
    [
        stream.core.features.windows,
        stream.core.features.store,
        stream.core.features.timeofday,
        stream.core.features.extractor,
    ],
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("horizon", [60.0, 3600.0, 86400.0, 2592000.0])
def test_decayed_window_matches_batch(horizon: float) -> None:
    rng = random.Random(11)
    w = DecayedWindow(horizon)
    events: list[tuple[float, float]] = []
    t = 1.6e9
    for _ in range(500):
        t += rng.expovariate(1.0 / rng.choice([5.0, 600.0, 20000.0]))
        q = t + rng.choice([0.0, rng.uniform(0.0, 3 * horizon)])  # also read ahead of time
        expected_c = sum(math.exp(-(q - ti) / horizon) for ti, _ in events)
        expected_s = sum(x * math.exp(-(q - ti) / horizon) for ti, x in events)
        assert _close(w.count(q), expected_c)
        assert _close(w.total(q), expected_s)
        # Weights relative to the newest event: the decay to q cancels, nothing underflows.
        rel = [math.exp(-(events[-1][0] - ti) / horizon) for ti, _ in events]
        weighted = sum(wi * x for wi, (_, x) in zip(rel, events, strict=True))
        expected_mean = weighted / sum(rel) if events else 0.0
        assert _close(w.mean(q), expected_mean)
        x = rng.lognormvariate(3.0, 1.0)
        w.update(x, t)
        events.append((t, x))


def test_decayed_window_out_of_order_is_finite_and_never_grows() -> None:
    w = DecayedWindow(3600.0)
    w.update(1.0, 1000.0)
    w.update(2.0, 400.0)  # late: treated as happening at 1000
    assert w.count(500.0) == 2.0  # reading "in the past" never inflates the state
    assert w.mean(0.0) == 1.5
    assert all(math.isfinite(v) for v in (w.count(-1e12), w.total(1e12), w.mean(1e12)))


def test_decayed_window_rejects_bad_horizon() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            DecayedWindow(bad)


def test_running_moments_match_statistics_and_river() -> None:
    rng = random.Random(3)
    m = RunningMoments()
    river_var = stats.Var(ddof=1)
    xs: list[float] = []
    for _ in range(1000):
        x = rng.lognormvariate(4.0, 1.5)
        if len(xs) >= 2:
            mu, sd = statistics.fmean(xs), statistics.stdev(xs)
            assert _close(m.mean, mu)
            assert _close(m.var, sd * sd)
            assert _close(m.var, river_var.get())
            assert math.isclose(m.zscore(x), (x - mu) / sd, rel_tol=REL, abs_tol=1e-9)
        else:
            assert m.zscore(x) == 0.0
        m.update(x)
        river_var.update(x)
        xs.append(x)
    assert m.n == len(xs)


def test_running_moments_constant_history_has_zero_z() -> None:
    m = RunningMoments()
    for _ in range(5):
        m.update(7.0)
    assert m.var == 0.0
    assert m.zscore(100.0) == 0.0
