"""Drift alarms that mean something: quiet on a stationary stream whose fraud comes and goes and
whose legitimate scores follow a weekly rhythm, firing (once) soon after a real change, and
logged at most once per kind and partition per interval while every detection is counted."""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from river import drift

from stream.core.evaluation.alarms import DriftAlarms
from stream.core.evaluation.drift import DriftEvent, LossDrift, ScorePSI, decision_edges
from stream.core.evaluation.oversight import Oversight, OversightConfig
from stream.core.pipeline import _log_drift
from stream.core.scoring.policy import Policy
from stream.observability.metrics import Metrics
from stream.observability.quality import QualityGauges

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
# The bound this file holds LossDrift to: a model that goes from catching 60% of fraud to
# catching 5% is flagged within this many fraud labels of the change (27-58 over 20 seeds).
FRAUD_LABELS_TO_DETECT = 80


def _labels(rng: random.Random, days: float, change_at: float | None = None,
            caught_after: float = 0.05) -> list[tuple[bool, float, float]]:
    """(is_fraud, decision-time score, label time), one label every 20 s of event time.

    Stationary unless `change_at`: 0.5% fraud, 2% during incidents (one every ~4 days, lasting
    1-4 days); the model catches 60% of fraud (a high score), misses the rest (a low one); at
    weekends every legitimate score is four times higher. From `change_at` on it catches only
    `caught_after` of the fraud.
    """
    out: list[tuple[bool, float, float]] = []
    t, incident_until = 0.0, -1.0
    while t < days * DAY:
        if t > incident_until and rng.random() < 20.0 / (4 * DAY):
            incident_until = t + rng.uniform(1, 4) * DAY
        fraud = rng.random() < (0.02 if t < incident_until else 0.005)
        caught = 0.6 if change_at is None or t < change_at else caught_after
        if fraud:
            score = rng.uniform(0.2, 0.95) if rng.random() < caught else rng.betavariate(1.2, 20)
        else:
            score = rng.betavariate(1, 15 if (t // DAY) % 7 >= 5 else 60)
        out.append((fraud, score, T0 + t))
        t += 20.0
    return out


def _fired(detector: LossDrift, stream: list[tuple[bool, float, float]]) -> list[DriftEvent]:
    fired = []
    for y, score, at in stream:
        detector.update(y, score, at)
        if detector.detected:
            fired.append(detector.detected)
    return fired


@pytest.mark.parametrize("seed", range(5))
def test_loss_drift_is_quiet_on_a_stationary_month_where_adwin_on_every_label_rings(
        seed: int) -> None:
    stream = _labels(random.Random(seed), days=30)
    # The old alarm: ADWIN on every label's log loss. Incidents and weekends move that mean.
    adwin, rang = drift.ADWIN(delta=0.002), 0
    for y, score, _ in stream:
        p = min(max(score, 1e-15), 1 - 1e-15)
        adwin.update(min(-math.log(p if y else 1 - p), 10.0))
        rang += adwin.drift_detected
    assert rang >= 5
    detector = LossDrift(partition=3)
    assert _fired(detector, stream) == []
    assert detector.labels == len(stream) and detector.fraud_labels == sum(y for y, _, _ in stream)
    assert 1.0 < detector.mean_loss < 3.0  # the fraud labels' mean loss, not every label's


@pytest.mark.parametrize("seed", range(5))
def test_loss_drift_fires_once_within_the_bound_after_the_model_starts_missing_fraud(
        seed: int) -> None:
    change = T0 + 30 * DAY
    stream = _labels(random.Random(100 + seed), days=45, change_at=30 * DAY)
    fired = _fired(LossDrift(partition=3), stream)
    assert len(fired) == 1, fired
    event = fired[0]
    assert event.kind == "loss" and event.partition == 3 and event.direction == "up"
    assert event.at >= change
    frauds_after = sum(1 for y, _, at in stream if y and change <= at <= event.at)
    assert frauds_after <= FRAUD_LABELS_TO_DETECT
    # The event says where the loss went and where it came from.
    assert event.value > 2.5 and 1.5 < event.reference < 2.1
    assert event.observations == sum(1 for _, _, at in stream if at <= event.at)


def test_loss_drift_ignores_a_model_that_gets_better() -> None:
    rng = random.Random(7)
    stream = _labels(rng, days=20, change_at=10 * DAY, caught_after=0.95)
    assert _fired(LossDrift(), stream) == []


def test_loss_drift_waits_for_min_labels_fraud_labels() -> None:
    stream = [(True, 0.9 if i < 20 else 1e-6, float(i)) for i in range(100)]
    assert [e.at for e in _fired(LossDrift(min_labels=40), stream)] == [40.0]
    assert [e.at for e in _fired(LossDrift(min_labels=10), stream)] == [36.0]


# -- score PSI ----------------------------------------------------------------------------
def _numpy_psi(reference: list[float], recent: list[float], edges: tuple[float, ...]) -> float:
    """PSI written out independently: fixed edges, floor of 1e-4."""
    k = len(edges) + 1
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=k)
    actual = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=k)
    e = np.maximum(expected / len(reference), 1e-4)
    a = np.maximum(actual / len(recent), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def test_psi_equals_a_batch_recomputation_of_the_last_two_windows() -> None:
    rng = random.Random(5)
    scores = [rng.betavariate(1, 20) for _ in range(4000)] + \
        [rng.betavariate(1, 6) for _ in range(1700)]
    edges = decision_edges(0.2, 0.6)
    monitor = ScorePSI(reference_size=2000, window=1500, edges=edges, check_every=1)
    for i, score in enumerate(scores):
        monitor.update(score, float(i))
    # The reference is the 2000 scores just before the most recent 1500, not the first ones.
    expected = _numpy_psi(scores[-3500:-1500], scores[-1500:], edges)
    assert monitor.value == pytest.approx(expected, rel=1e-12)
    assert monitor.value > 0.25


def test_psi_ignores_churn_below_the_thresholds_and_fires_once_per_shift() -> None:
    rng = random.Random(11)
    monitor = ScorePSI(reference_size=3000, window=3000, warmup=500, check_every=100,
                       partition=1)
    for i in range(500):  # a cold model: every score 0.5, must not count
        monitor.update(0.5, float(i))
    assert math.isnan(monitor.value)
    fired = []
    t = 500
    # Low scores whose scale changes every 1500 decisions (a model re-calibrating far below
    # any threshold), then a shift into the review band, back, and again.
    phases = [("churn", 24_000), ("shift", 8000), ("churn", 12_000), ("shift", 8000)]
    for phase, (kind, n) in enumerate(phases):
        for _ in range(n):
            if kind == "churn":
                score = rng.betavariate(1, 400 if (t // 1500) % 2 else 60)
            else:
                score = rng.betavariate(1, 60) if rng.random() < 0.8 else rng.uniform(0.2, 0.7)
            monitor.update(score, float(t))
            if monitor.detected:
                fired.append((phase, monitor.detected))
            t += 1
        if phase == 0:
            assert monitor.value < 0.1
    assert [phase for phase, _ in fired] == [1, 2, 3]  # into the shift, out of it, into it
    event = fired[0][1]
    assert event.kind == "psi" and event.partition == 1 and event.value > 0.25
    assert event.reference == 0.25 and 24_500 <= event.at < 24_500 + 3000


def test_psi_rebase_restarts_both_windows() -> None:
    rng = random.Random(2)
    monitor = ScorePSI(reference_size=1000, window=1000, check_every=50)
    for i in range(2000):
        monitor.update(rng.betavariate(1, 60), float(i))
    for i in range(600):
        monitor.update(rng.uniform(0.2, 0.9), float(i))
    assert monitor.value > 0.25
    monitor.rebase()
    assert math.isnan(monitor.value) and not monitor.ready
    fired = 0
    for i in range(3000):
        monitor.update(rng.uniform(0.2, 0.9), float(i))
        fired += monitor.detected is not None
    assert fired == 0 and monitor.value < 0.1


def test_decision_edges_follow_the_policy() -> None:
    assert decision_edges(0.4, 0.8) == (0.05, 0.1, 0.2, 0.4, 0.8)
    assert decision_edges(0.5, 0.5) == (0.0625, 0.125, 0.25, 0.5)


# -- rate-limited log lines, every detection counted ----------------------------------------
def _event(kind: str, partition: int, at: float) -> DriftEvent:
    return DriftEvent(kind, partition, at, 0.5, 0.25, 10)  # type: ignore[arg-type]


def test_alarms_log_once_per_kind_and_partition_per_interval() -> None:
    alarms = DriftAlarms(interval_s=3600.0)
    lines = [alarms.line(_event("psi", 0, T0 + 60 * i)) for i in range(61)]
    assert [i for i, line in enumerate(lines) if line is not None] == [0, 60]
    last = lines[60]
    assert last is not None and "59 more since the last line, not logged" in last.message
    assert last.level == logging.WARNING and "partition 0" in last.message
    # Other kinds and partitions have their own budget; a revoked partition starts afresh.
    assert alarms.line(_event("loss", 0, T0 + 100)) is not None
    assert alarms.line(_event("psi", 1, T0 + 100)) is not None
    assert alarms.line(_event("psi", 1, T0 + 200)) is None
    alarms.forget(1)
    assert alarms.line(_event("psi", 1, T0 + 300)) is not None
    assert alarms.suppressed_total == 60
    # An interval of 0 logs them all.
    assert all(DriftAlarms(0.0).line(_event("psi", 0, T0)) for _ in range(3))


def test_drift_alarms_are_logged_once_and_counted_every_time(
        caplog: pytest.LogCaptureFixture) -> None:
    config = OversightConfig(psi_reference=100, psi_window=100, psi_warmup=0,
                             drift_log_interval_s=3600.0)
    oversight = Oversight(config, "champ", Policy())
    rng = random.Random(3)
    events = []
    caplog.set_level(logging.INFO, logger="stream.core.pipeline")
    for i in range(3000):  # one decision a second: the scores jump every 250 decisions
        score = rng.betavariate(1, 60) if (i // 250) % 2 == 0 else rng.uniform(0.2, 0.9)
        event = oversight.decided(2, at=T0 + i, score=score, challengers={})
        if event is not None:
            events.append(event)
            _log_drift(oversight, event)
    assert len(events) >= 5
    logged = [r for r in caplog.records if "drift detected" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert "(psi, up) on partition 2" in logged[0].getMessage()
    assert oversight.drift_counts[("psi", "up")] == len(events)
    assert oversight.alarms.suppressed_total == len(events) - 1
    # The metric counts every one.
    metrics = Metrics(CollectorRegistry())
    QualityGauges(metrics).refresh(oversight, "champ")
    assert metrics.drift_detected.labels("psi", "up")._value.get() == len(events)
    # An hour of event time later the next one is logged, with the count of the others.
    later = DriftEvent("psi", 2, T0 + 3600 + 3000, 0.4, 0.25, 3001)
    _log_drift(oversight, later)
    logged = [r for r in caplog.records if "drift detected" in r.getMessage()]
    assert len(logged) == 2
    assert f"{len(events) - 1} more since the last line" in logged[1].getMessage()


# -- the benchmark's injected changes (benchmarks/quality/drift.py) ------------------------
def test_the_injected_changes_leave_the_stream_alone_before_the_change() -> None:
    from benchmarks.quality.drift import STREAMS, DriftProtocol

    protocol = DriftProtocol(cards=300, merchants=150, warmup_days=3, month_days=4,
                             change_after_days=2)
    change = protocol.traffic(protocol.days).start_time.timestamp() + protocol.change_day * DAY
    streams = {name: list(make(protocol, protocol.days)) for name, make in STREAMS.items()}

    def before(records: list[tuple[str, dict, str | None]]) -> list[tuple[str, dict]]:
        return [(kind, body) for kind, body, _ in records
                if _time(body["timestamp"]) < change and not body["transaction_id"].startswith(
                    "new-")]

    base = streams["stationary"]
    for name in ("new_pattern", "amounts_x10"):
        assert before(streams[name]) == before(base), name
    new = [(kind, body) for kind, body, pattern in streams["new_pattern"]
           if pattern == "new_pattern"]
    new_tx = [body for kind, body in new if kind == "transaction"]
    assert new_tx and all(_time(body["timestamp"]) >= change for body in new_tx)
    assert {b["transaction_id"] for k, b in new if k == "label"} <= {b["transaction_id"]
                                                                      for b in new_tx}
    fraud = sum(1 for kind, _, pattern in base if kind == "transaction" and pattern)
    assert 0.5 * fraud / protocol.days < len(new_tx) / (protocol.days - protocol.change_day)
    scaled = [(a["amount"], b["amount"]) for (k, a, _), (_, b, _) in
              zip(base, streams["amounts_x10"], strict=True) if k == "transaction"
              and _time(a["timestamp"]) >= change]
    assert scaled and all(b == pytest.approx(10 * a, abs=0.006) for a, b in scaled)


def _time(stamp: str) -> float:
    from stream.contracts.codec import parse_timestamp

    return parse_timestamp(stamp)
