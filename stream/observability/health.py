"""/metrics, /healthz and /readyz on one port, for Prometheus and for orchestrators.

Liveness means the loop is turning: it beats on every poll, and a loop that has not beaten
for `stuck_after_s` (a hung broker call, a deadlock) is reported dead so Kubernetes restarts
it. A restore on assignment is alive however long it takes: it bounds itself (no progress
for a minute, or a crashed instance's transaction still open after its timeout, fails it;
stream/kafka/restore.py), and a restart would only start it over. Readiness means partitions
are assigned, their state restored and the broker reachable, so traffic and scale-out
decisions only count instances that are actually scoring. A broker outage makes an instance
unready but not dead: the clients reconnect by themselves and a restart would not bring the
broker back (the loop gives up after `max_outage_s`). Checkpoints that keep failing make it
unready at once, and dead once they have failed for `stuck_after_s` with the broker
reachable: a loop that turns but never makes progress is stuck too, and a broker that
answers is not the reason.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.observability.httpserver import BoundedHTTPServer


class Health:
    """Thread-safe liveness and readiness state, written by the loop, read by the server.

    >>> health = Health(stuck_after_s=5.0, clock=lambda: 100.0)
    >>> health.beat(); health.alive()
    (True, 'loop beat 0.0s ago')
    >>> health.ready()
    (False, 'no partitions assigned')
    >>> health.set_partitions(2); health.ready()
    (True, '2 partition(s) assigned')
    >>> health.set_broker_reachable(False); health.ready()
    (False, 'Kafka unreachable for 0.0s')
    >>> health.set_broker_reachable(True); health.set_checkpoint_failures(3); health.ready()
    (False, 'checkpoints failing: 3 in a row for 0.0s')
    """

    def __init__(self, stuck_after_s: float = 60.0, clock: Any = time.monotonic) -> None:
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat: float | None = None
        self._partitions = 0
        self._restoring = False
        self._stopped = False
        self._broker_down_since: float | None = None
        self._failures = 0
        self._failing_since: float | None = None

    def set_checkpoint_failures(self, in_a_row: int) -> None:
        """From the loop: checkpoints failed in a row since the last one that succeeded."""
        with self._lock:
            self._failures = in_a_row
            if in_a_row == 0:
                self._failing_since = None
            elif self._failing_since is None:
                self._failing_since = self._clock()

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def set_partitions(self, count: int, restoring: bool = False) -> None:
        with self._lock:
            self._partitions = count
            self._restoring = restoring

    def set_broker_reachable(self, reachable: bool) -> None:
        """From the broker probe: not ready from the first failed connect to the next
        successful one."""
        with self._lock:
            if reachable:
                self._broker_down_since = None
            elif self._broker_down_since is None:
                self._broker_down_since = self._clock()

    def set_stopped(self) -> None:
        with self._lock:
            self._stopped = True

    def alive(self) -> tuple[bool, str]:
        with self._lock:
            if self._stopped:
                return False, "loop stopped"
            if self._last_beat is None:
                return True, "starting"
            now = self._clock()
            age = now - self._last_beat
            failing = None if self._failing_since is None else now - self._failing_since
            broker_up = self._broker_down_since is None
            restoring = self._restoring
        if restoring:
            return True, f"restoring state (loop beat {age:.1f}s ago)"
        if age > self.stuck_after_s:
            return False, f"loop stuck: no beat for {age:.1f}s"
        if failing is not None and failing > self.stuck_after_s and broker_up:
            return False, (f"loop stuck: checkpoints failing for {failing:.1f}s with the "
                           "broker reachable")
        return True, f"loop beat {age:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.alive()
        with self._lock:
            partitions, restoring = self._partitions, self._restoring
            down_since = self._broker_down_since
        if not alive:
            return False, why
        if down_since is not None:
            return False, f"Kafka unreachable for {self._clock() - down_since:.1f}s"
        with self._lock:
            failures, failing_since = self._failures, self._failing_since
        if failing_since is not None:
            return False, (f"checkpoints failing: {failures} in a row for "
                           f"{self._clock() - failing_since:.1f}s")
        if partitions == 0:
            return False, "no partitions assigned"
        if restoring:
            return False, "restoring state"
        return True, f"{partitions} partition(s) assigned"


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = health.alive() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # scrapes every few seconds would drown the scorer's own log

    return Handler


class HealthServer:
    """/metrics, /healthz and /readyz on a BoundedHTTPServer (httpserver.py): a few worker
    threads, whatever the clients do; `port` is the bound port (useful with port 0)."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int,
                 **limits: Any) -> None:
        """`limits`: BoundedHTTPServer's keyword arguments (workers, backlog, timeouts)."""
        self._server = BoundedHTTPServer((host, port), _handler(registry, health), **limits)
        self.port = self._server.port
        self._server.start()

    def open_connections(self) -> int:
        return self._server.open_connections()

    def shutdown(self) -> None:
        self._server.stop()
