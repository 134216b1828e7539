"""Gauges refreshed about once a second from the loop's state (never per event)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Hashable

from stream.core.pipeline import Pipeline
from stream.kafka.clients import GroupConsumer
from stream.kafka.records import Source
from stream.observability.health import Health
from stream.observability.metrics import Metrics


def refresh(metrics: Metrics, consumer: GroupConsumer, pipeline: Pipeline,
            positions: dict[Source, int]) -> dict[Source, int]:
    """Lag per assigned partition and state sizes (model metrics: quality.py); returns the
    lag by partition.

    The high watermark is the client's cached value from its last fetch response and the
    position is ours (Ledger.positions: the next record to do), the client's only where we
    know none yet: no broker round trip on the loop's thread.
    """
    lags = consumer.lag(positions)
    for (topic, partition), behind in lags.items():
        metrics.lag.labels(topic, str(partition)).set(behind)
    for kind, size in pipeline.state_sizes().items():
        metrics.state_keys.labels(kind).set(size)
    metrics.assigned.set(len(pipeline.partitions))
    return lags


def refresh_budgets(metrics: Metrics, pipeline: Pipeline, counted: dict[str, int]) -> None:
    """Estimated bytes of each budgeted store, and the entries its budget dropped since the
    last call (`counted`: the drops counted so far, by kind, kept by the caller)."""
    for kind, budget in pipeline.state_budgets().items():
        metrics.state_bytes.labels(kind).set(budget.used)
        new = budget.dropped - counted.get(kind, 0)
        if new > 0:
            metrics.state_budget_drops.labels(kind).inc(new)
            counted[kind] = budget.dropped


class StallWatch:
    """Says when input has waited with nothing done for `after_s`, once per `after_s`.

    Why: a stall that raises nothing is silent. A partition paused and never resumed, or a
    gate that never opens, leaves the scorer healthy in every other way while its lag grows;
    this names it in the log (with the loop's state, see ScorerLoop) instead of leaving it to
    be found from a dashboard. `progress` is anything that changes when work is done (the
    loop passes its committed positions, assignments and recoveries).

    >>> times = iter([0.0, 10.0, 31.0, 40.0, 62.0, 63.0])
    >>> watch = StallWatch(after_s=30.0, clock=lambda: next(times))
    >>> [watch.stalled(progress=1, waiting=w) for w in (5, 5, 5, 5, 5)]
    [None, None, 31.0, None, 62.0]
    >>> watch.stalled(progress=2, waiting=5) is None  # work was done: the count restarts
    True
    """

    def __init__(self, after_s: float = 30.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.after_s = after_s
        self._clock = clock
        self._progress: Hashable = None
        self._since = self._reported = 0.0

    def stalled(self, progress: Hashable, waiting: int) -> float | None:
        """Seconds without progress while `waiting` > 0 records wait, when a report is due."""
        now = self._clock()
        if waiting <= 0 or progress != self._progress:
            self._progress, self._since = progress, now
            self._reported = now
            return None
        if now - self._reported < self.after_s:
            return None
        self._reported = now
        return now - self._since


def forget_partition(metrics: Metrics, source: Source) -> None:
    """Stop exporting lag for a partition we no longer own (a stale value would mislead)."""
    try:
        metrics.lag.remove(source[0], str(source[1]))
    except KeyError:
        pass


class BrokerProbe:
    """Sets `fraudstream_broker_up` (and readiness, given a Health) from a TCP connect to the
    bootstrap servers every few seconds, in a daemon thread.

    The Kafka client retries a broker outage inside its calls (a commit just takes longer), so
    the loop itself may never see an error; operators still need to see the outage, and an
    orchestrator must not count the instance as serving meanwhile.
    """

    def __init__(self, metrics: Metrics, bootstrap_servers: str, every_s: float = 2.0,
                 health: Health | None = None) -> None:
        self.metrics = metrics
        self.every_s = every_s
        self.health = health
        self._targets = [_host_port(s) for s in bootstrap_servers.split(",") if s.strip()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
        self._down_since: float | None = None

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reachable(self) -> bool:
        for host, port in self._targets:
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return True
            except OSError:
                continue
        return False

    def down_for(self) -> float:
        """Seconds the broker has been unreachable without a break (0 while it answers)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while not self._stop.is_set():
            up = self.reachable()
            self.metrics.broker_up.set(1 if up else 0)
            if self.health is not None:
                self.health.set_broker_reachable(up)
            if up:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = time.monotonic()
            self._stop.wait(self.every_s)


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)
