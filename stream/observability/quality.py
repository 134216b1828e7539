"""Model-quality metrics, set about once a second from the pipeline's plain evaluation values.

Counters (drift detections, promotions, labels assumed legitimate) are kept as totals by the
evaluation layer; here only the increase since the last refresh is added, so Prometheus sees
proper monotonic counters. NaN (not enough data yet) leaves a gauge at its last value rather
than exporting a NaN that would break `rate()`-free panels and alert comparisons.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from stream.core.evaluation.oversight import Oversight
from stream.observability.metrics import Metrics


class QualityGauges:
    """Remembers what was already counted, so each refresh adds only the increase."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._drift: Counter[tuple[str, str]] = Counter()
        self._promotions = 0
        self._assumed = 0

    def refresh(self, oversight: Oversight, model: str) -> None:
        m = self.metrics
        snap = oversight.summary()
        _model_gauges(m, model, snap)
        _set(m.alert_rate.labels(model), snap.alert_rate)
        _set(m.label_rate, snap.label_rate)
        m.label_delay.observe_many(oversight.drain_label_delays())
        for name, c in oversight.challengers().items():
            _model_gauges(m, name, c.metrics)
            _set(m.challenger_agreement.labels(name), c.agreement)
            _set(m.challenger_score_diff.labels(name), c.mean_abs_diff)
            for metric, delta in c.deltas.items():
                _set(m.challenger_delta.labels(name, metric), delta)
        for (kind, direction), total in oversight.drift_counts.items():
            new = total - self._drift[(kind, direction)]
            if new > 0:
                m.drift_detected.labels(kind, direction).inc(new)
                self._drift[(kind, direction)] = total
        for partition, value in oversight.psi().items():
            _set(m.score_psi.labels(str(partition)), value)
        promotions = len(oversight.promotions)
        if promotions > self._promotions:
            m.promotions.inc(promotions - self._promotions)
            self._promotions = promotions
        if oversight.assumed_legit > self._assumed:
            m.assumed_legit.inc(oversight.assumed_legit - self._assumed)
            self._assumed = oversight.assumed_legit

    def forget_partition(self, partition: int) -> None:
        try:
            self.metrics.score_psi.remove(str(partition))
        except KeyError:
            pass


def _model_gauges(m: Metrics, model: str, snap: Any) -> None:
    _set(m.roc_auc.labels(model), snap.roc_auc)
    _set(m.log_loss.labels(model), snap.log_loss)
    _set(m.pr_auc.labels(model), snap.pr_auc)
    for threshold in ("review", "decline"):
        rates = snap.rates(threshold)
        _set(m.precision.labels(model, threshold), rates.precision)
        _set(m.recall.labels(model, threshold), rates.recall)
        _set(m.f1.labels(model, threshold), rates.f1)


def _set(gauge: Any, value: float) -> None:
    if not math.isnan(value):
        gauge.set(value)
