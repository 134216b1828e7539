"""Time-of-day and day-of-week signals from the event timestamp (UTC).

Fraud clusters at night and at weekends, when cardholders and analysts are asleep. The hour
is encoded as a point on a circle (sin, cos of the continuous time of day) so 23:59 and
00:00 are neighbours for a linear model, which a raw hour 0..23 would put far apart.

Computed with integer arithmetic on epoch seconds rather than ``datetime``: it is on the hot
path, and UTC has no daylight-saving jumps to handle. Only the event's own ``timestamp`` is
used, never the wall clock, so a replay computes the same values as live traffic.
"""

from __future__ import annotations

import math

__all__ = ["DAY_S", "NIGHT_END_S", "RADIANS_PER_S", "calendar_features"]

DAY_S = 86400.0
RADIANS_PER_S = 2.0 * math.pi / DAY_S
NIGHT_END_S = 6 * 3600.0
"""``is_night`` covers [00:00, 06:00) UTC."""


def calendar_features(t: float) -> tuple[float, float, float, float]:
    """``(hour_sin, hour_cos, is_weekend, is_night)`` for epoch seconds ``t`` in UTC.

    Epoch day 0 (1970-01-01) was a Thursday, so the ISO weekday index (Monday = 0) of day
    ``d`` is ``(d + 3) % 7``; Saturday and Sunday are 5 and 6.

    Examples
    --------
    >>> calendar_features(0.0)  # Thursday 1970-01-01 00:00 UTC
    (0.0, 1.0, 0.0, 1.0)
    >>> s, c, weekend, night = calendar_features(1_704_510_000.0)  # Saturday 2024-01-06 03:00
    >>> round(s, 6), round(c, 6), weekend, night
    (0.707107, 0.707107, 1.0, 1.0)
    >>> calendar_features(1_704_722_400.0)[2:]  # Monday 2024-01-08 14:00
    (0.0, 0.0)
    """
    day, sod = divmod(t, DAY_S)  # floor semantics: correct for times before 1970 too
    angle = sod * RADIANS_PER_S
    weekend = 1.0 if (int(day) + 3) % 7 >= 5 else 0.0
    night = 1.0 if sod < NIGHT_END_S else 0.0
    return math.sin(angle), math.cos(angle), weekend, night
