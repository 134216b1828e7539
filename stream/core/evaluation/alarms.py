"""Which drift detections deserve a log line: at most one per kind and partition per interval
of event time, the others counted and reported on the next line.

Every detection is still counted (`Oversight.drift_counts`, the `drift_detected` metric); only
the log is rate-limited, so a detector that fires in bursts cannot bury the log. The decision
and the text are plain values: the pipeline writes the line (`pipeline._log_drift`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from stream.core.evaluation.drift import DriftEvent

_WHAT = {"loss": "fraud-label log loss", "psi": "score PSI"}


@dataclass(frozen=True, slots=True)
class DriftLine:
    """A log line to write: its level and its text."""

    level: int
    message: str


class DriftAlarms:
    """Rate-limits drift log lines per (kind, partition) by event time.

    >>> from stream.core.evaluation.drift import DriftEvent
    >>> alarms = DriftAlarms(interval_s=3600.0)
    >>> events = [DriftEvent("psi", 1, 1_767_225_600.0 + 60 * i, 0.4, 0.25, 100 * i)
    ...           for i in range(90)]  # one a minute for an hour and a half
    >>> lines = [line for line in map(alarms.line, events) if line is not None]
    >>> len(lines), alarms.suppressed_total
    (2, 88)
    >>> print(lines[1].message)  # doctest: +NORMALIZE_WHITESPACE
    drift detected (psi, up) on partition 1 at event time 2026-01-01T01:00:00+00:00: score PSI
    0.4 (reference 0.25, after 6000 observations); 59 more since the last line, not logged
    """

    def __init__(self, interval_s: float = 3600.0) -> None:
        if not interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self._last: dict[tuple[str, int], float] = {}
        self._held: Counter[tuple[str, int]] = Counter()
        self.suppressed_total = 0

    def line(self, event: DriftEvent) -> DriftLine | None:
        """The line to log for `event`, or None when one was logged less than `interval_s`
        of event time ago for the same kind and partition (the event is then counted)."""
        key = (event.kind, event.partition)
        last = self._last.get(key)
        if last is not None and last <= event.at < last + self.interval_s:
            self._held[key] += 1
            self.suppressed_total += 1
            return None
        self._last[key] = event.at
        held = self._held.pop(key, 0)
        # A loss going down is good news (the model adapted): worth a line, not a warning.
        level = logging.INFO if event.direction == "down" else logging.WARNING
        text = (f"drift detected ({event.kind}, {event.direction}) on partition "
                f"{event.partition} at event time {_iso(event.at)}: "
                f"{_WHAT.get(event.kind, event.kind)} {event.value:.4g} (reference "
                f"{event.reference:.4g}, after {event.observations} observations)")
        if held:
            text += f"; {held} more since the last line, not logged"
        return DriftLine(level, text)

    def forget(self, partition: int) -> None:
        """A revoked partition's rate-limit state goes with it."""
        for key in [k for k in self._last if k[1] == partition]:
            del self._last[key]
            self._held.pop(key, None)


def _iso(ts: float) -> str:
    if not math.isfinite(ts):
        return str(ts)
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)
