"""Calendar features from the event timestamp in UTC."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from stream.core.features.timeofday import calendar_features


def _ts(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_saturday_three_am() -> None:
    s, c, weekend, night = calendar_features(_ts(2024, 1, 6, 3, 0))
    assert weekend == 1.0 and night == 1.0
    assert math.isclose(s, math.sin(math.pi / 4)) and math.isclose(c, math.cos(math.pi / 4))


def test_known_points() -> None:
    assert calendar_features(_ts(2024, 1, 7, 23, 59, 59))[2:] == (1.0, 0.0)  # Sunday evening
    assert calendar_features(_ts(2024, 1, 8, 0, 0))[2:] == (0.0, 1.0)  # Monday midnight
    assert calendar_features(_ts(2024, 1, 8, 6, 0))[3] == 0.0  # 06:00 is no longer night
    assert calendar_features(_ts(2024, 1, 5, 5, 59, 59))[2:] == (0.0, 1.0)  # Friday 05:59
    s, c, _, _ = calendar_features(_ts(2024, 3, 1, 12, 0))
    assert math.isclose(s, 0.0, abs_tol=1e-12) and math.isclose(c, -1.0)
    s, c, _, _ = calendar_features(_ts(2024, 3, 1, 18, 0))
    assert math.isclose(s, -1.0) and math.isclose(c, 0.0, abs_tol=1e-12)


def test_matches_datetime_on_random_timestamps() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        t = rng.uniform(-1e9, 4e9)  # before 1970 too
        d = datetime.fromtimestamp(t, tz=UTC)
        hours = d.hour + d.minute / 60 + (d.second + d.microsecond / 1e6) / 3600
        s, c, weekend, night = calendar_features(t)
        assert math.isclose(s, math.sin(2 * math.pi * hours / 24), abs_tol=1e-6)
        assert math.isclose(c, math.cos(2 * math.pi * hours / 24), abs_tol=1e-6)
        assert weekend == (1.0 if d.weekday() >= 5 else 0.0)
        assert night == (1.0 if d.hour < 6 else 0.0)
