"""The soak's figures: resident memory per scorer process and whether it is flat, and how
long each fault kept the group behind.

A scorer's memory first grows while its state fills (cards seen, recent ids remembered, the
model's weights), then should stay level. So the figure that matters is the trend over the
second half of each stretch between faults, in MiB per 10 minutes: near 0 is flat, a steady
positive slope is a leak. (A fault can move the level once, by a restore or a new process:
over a whole process's life that step would read as a slope.)
"""

from __future__ import annotations

from typing import Any


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per 10 minutes.

    >>> slope_per_10min([(0.0, 100.0), (300.0, 101.0), (600.0, 102.0)])
    2.0
    >>> slope_per_10min([(0.0, 100.0)]) is None
    True
    """
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return round(cov / var * 600.0, 3)


def rss_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scorer process (pid): its samples' span, first, peak and last RSS, and the slope
    over the second half of its life.

    >>> s = [{"t_s": t, "pid": 1, "rss_mib": 100.0 + (t > 40)} for t in range(0, 101, 10)]
    >>> rss_summary(s)["processes"][0]["second_half_slope_mib_per_10min"]
    0.0
    """
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for sample in samples:
        if sample.get("rss_mib") is not None:
            by_pid.setdefault(int(sample["pid"]), []).append(
                (float(sample["t_s"]), float(sample["rss_mib"])))
    processes = []
    for pid, points in by_pid.items():
        start, stop = points[0][0], points[-1][0]
        half = [p for p in points if p[0] >= (start + stop) / 2]
        processes.append({
            "pid": pid, "from_s": start, "to_s": stop, "samples": len(points),
            "first_mib": points[0][1], "peak_mib": max(m for _, m in points),
            "last_mib": points[-1][1],
            "second_half_slope_mib_per_10min": slope_per_10min(half),
        })
    return {"processes": processes}


def rss_segments(samples: list[dict[str, Any]], fault_times: list[float]) -> list[dict[str, Any]]:
    """The run cut at each fault: per stretch, RSS at its start and end, its peak, and the
    slope over its second half.

    >>> s = [{"t_s": t, "pid": 1, "rss_mib": 100.0 + 50 * (t >= 60)} for t in range(0, 121, 10)]
    >>> [(g["first_mib"], g["last_mib"], g["second_half_slope_mib_per_10min"])
    ...  for g in rss_segments(s, [55.0])]
    [(100.0, 100.0, 0.0), (150.0, 150.0, 0.0)]
    """
    edges = [float("-inf"), *sorted(fault_times), float("inf")]
    out = []
    for start, stop in zip(edges, edges[1:], strict=False):
        points = [(float(x["t_s"]), float(x["rss_mib"])) for x in samples
                  if x.get("rss_mib") is not None and start <= x["t_s"] < stop]
        if not points:
            continue
        middle = (points[0][0] + points[-1][0]) / 2
        out.append({
            "from_s": points[0][0], "to_s": points[-1][0], "first_mib": points[0][1],
            "peak_mib": max(m for _, m in points), "last_mib": points[-1][1],
            "second_half_slope_mib_per_10min": slope_per_10min(
                [p for p in points if p[0] >= middle]),
        })
    return out


def recovered_after(samples: list[dict[str, Any]], fault_times: list[float],
                    normal: float) -> list[float | None]:
    """Seconds from each fault until the lag was back to `normal` for good: the first sample
    after the last one above it, before the next fault (None: still behind when the next
    fault or the end came).

    Not the first sample at or under `normal` after the fault: a broker restart shows a small
    lag for a while (the scorer has not failed a checkpoint yet, the traffic is held up too),
    and the backlog of its rewind comes after. The first soak of the shared default counted
    16 s that way for a recovery that took 189 s (lag up to 59,419 in between).

    >>> lags = [(590, 3), (616, 45), (639, 15455), (749, 59419), (779, 4292), (789, 8), (799, 11)]
    >>> recovered_after([{"t_s": t, "lag": lag} for t, lag in lags], [600.0], normal=400)
    [189.0]
    >>> recovered_after([{"t_s": 610, "lag": 5}, {"t_s": 620, "lag": None}], [600.0], 400)
    [10.0]
    >>> recovered_after([{"t_s": 610, "lag": 5000}], [600.0], 400)
    [None]
    """
    edges = [*sorted(fault_times), float("inf")]
    out: list[float | None] = []
    for start, stop in zip(edges, edges[1:], strict=False):
        span = [(float(x["t_s"]), x["lag"]) for x in samples
                if x.get("lag") is not None and start < x["t_s"] < stop]
        behind = [i for i, (_, lag) in enumerate(span) if lag > normal]
        after = behind[-1] + 1 if behind else 0
        out.append(round(span[after][0] - start, 1) if after < len(span) else None)
    return out
