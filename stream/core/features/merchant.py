"""A merchant's state and features: recent fraud by label time, recent activity, lifetime risk.

Why windows and not only a lifetime rate: a breached merchant emits fraud for weeks after
months of clean traffic, so its lifetime fraud rate (shrunk to a prior) stays diluted while
the breach runs. The fraud rate over the labels that arrived in the last 1, 7 and 30 days of
label time moves within days of the first chargebacks. Every window is exponentially decayed
(``windows.py``): O(1) memory per merchant, whatever its traffic.

Only labels already delivered are counted, by the time they arrived (their ``timestamp``), so
a transaction never sees a label that was not known at its decision. Each rate is shrunk to
the Beta prior ``(a, b)``: ``(frauds + a) / (labels + a + b)``; as the counts decay the rate
returns to the prior, so a merchant clean for a month reads as an unknown one.

State layout, one ``array('d')`` of ``WIDTH`` floats (slot 0 is the store's last-access time):
``[last_seen, last_tx_t, tx_1d, tx_7d, label_t, frauds_1d, labels_1d, frauds_7d, labels_7d,
frauds_30d, labels_30d, frauds_all, labels_all]``.

>>> from array import array
>>> m = array("d", [0.0] * WIDTH)
>>> add_transaction(m, t=0.0)
>>> add_label(m, is_fraud=True, t=0.0)
>>> add_label(m, is_fraud=False, t=0.0)
>>> out: dict[str, float] = {}
>>> features(m, t=86400.0, prior=(1.0, 99.0), out=out)
>>> round(out["merchant_count_1d"], 4), round(out["merchant_fraud_rate_30d"], 4)
(0.3679, 0.0193)
>>> out["merchant_risk"]  # lifetime: (1 + 1) / (2 + 100)
0.0196078431372549
"""

from __future__ import annotations

from array import array
from math import exp, log1p

__all__ = ["FEATURE_NAMES", "LABEL_HORIZONS_S", "WIDTH", "add_label", "add_transaction",
           "features"]

DAY_S = 86400.0
ACTIVITY_HORIZONS_S = (DAY_S, 7 * DAY_S)
LABEL_HORIZONS_S = (DAY_S, 7 * DAY_S, 30 * DAY_S)
WIDTH = 13
_INV_1D = 1.0 / DAY_S
_INV_7D = 1.0 / (7 * DAY_S)
_INV_30D = 1.0 / (30 * DAY_S)

FEATURE_NAMES: tuple[str, ...] = (
    "merchant_risk",
    "merchant_labelled_log",
    "merchant_count_1d",
    "merchant_count_7d",
    "merchant_activity_ratio",
    "merchant_fraud_rate_1d",
    "merchant_fraud_rate_7d",
    "merchant_fraud_rate_30d",
    "merchant_frauds_7d_log",
)


def features(m: array[float], t: float, prior: tuple[float, float], out: dict[str, float]) -> None:
    """Write the merchant's features as of event time ``t`` into ``out`` (state unchanged).

    ``merchant_activity_ratio`` is the last day's traffic against the daily average of the
    last week (1.0 = usual, above = a spike); +1 keeps a brand-new merchant finite.
    """
    a, b = prior
    ab = a + b
    c1 = m[2]
    c7 = m[3]
    if c7 > 0.0:
        dt = t - m[1]
        if dt > 0.0:
            c1 *= exp(-dt * _INV_1D)
            c7 *= exp(-dt * _INV_7D)
    out["merchant_risk"] = (m[11] + a) / (m[12] + ab)
    out["merchant_labelled_log"] = log1p(m[12])
    out["merchant_count_1d"] = c1
    out["merchant_count_7d"] = c7
    out["merchant_activity_ratio"] = c1 / (c7 / 7.0 + 1.0)
    f1, n1, f7, n7, f30, n30 = m[5], m[6], m[7], m[8], m[9], m[10]
    if n30 > 0.0:
        dl = t - m[4]
        if dl > 0.0:
            d1 = exp(-dl * _INV_1D)
            d7 = exp(-dl * _INV_7D)
            d30 = exp(-dl * _INV_30D)
            f1 *= d1
            n1 *= d1
            f7 *= d7
            n7 *= d7
            f30 *= d30
            n30 *= d30
    out["merchant_fraud_rate_1d"] = (f1 + a) / (n1 + ab)
    out["merchant_fraud_rate_7d"] = (f7 + a) / (n7 + ab)
    out["merchant_fraud_rate_30d"] = (f30 + a) / (n30 + ab)
    out["merchant_frauds_7d_log"] = log1p(f7)


def add_transaction(m: array[float], t: float) -> None:
    """Count one transaction at ``t`` in the activity windows (late ones count at the last)."""
    c1 = m[2]
    c7 = m[3]
    last = m[1]
    if c7 > 0.0:
        dt = t - last
        if dt > 0.0:
            c1 *= exp(-dt * _INV_1D)
            c7 *= exp(-dt * _INV_7D)
    if c7 == 0.0 or t > last:
        m[1] = t
    m[2] = c1 + 1.0
    m[3] = c7 + 1.0
    if t > m[0]:
        m[0] = t


def add_label(m: array[float], is_fraud: bool, t: float) -> None:
    """Count one delivered label at label time ``t`` in the fraud windows and the lifetime."""
    last = m[4]
    if m[10] > 0.0:
        dl = t - last
        if dl > 0.0:
            d1 = exp(-dl * _INV_1D)
            d7 = exp(-dl * _INV_7D)
            d30 = exp(-dl * _INV_30D)
            m[5] *= d1
            m[6] *= d1
            m[7] *= d7
            m[8] *= d7
            m[9] *= d30
            m[10] *= d30
    if m[10] == 0.0 or t > last:
        m[4] = t
    fraud = 1.0 if is_fraud else 0.0
    m[5] += fraud
    m[6] += 1.0
    m[7] += fraud
    m[8] += 1.0
    m[9] += fraud
    m[10] += 1.0
    m[11] += fraud
    m[12] += 1.0
    if t > m[0]:
        m[0] = t
