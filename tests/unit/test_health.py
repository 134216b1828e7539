"""/healthz, /readyz and /metrics of HealthServer, through real HTTP on an ephemeral port.

The clock is injected, so "stuck" is tested without sleeping past a timeout.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from stream.observability.health import Health, HealthServer
from stream.observability.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, body, content type) of GET path; error statuses are returned, not raised."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return (response.status, response.read().decode(),
                    response.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def shared_health(clock: FakeClock) -> Health:
    return Health(stuck_after_s=5.0, clock=clock)


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def shared_server(registry: CollectorRegistry, shared_health: Health) -> Iterator[HealthServer]:
    # One server for the module: its shutdown waits for serve_forever's 0.5 s poll interval.
    srv = HealthServer(registry, shared_health, "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def health(shared_health: Health, clock: FakeClock) -> Health:
    """The server's Health, back to its just-constructed state for each test."""
    clock.now = 1000.0
    Health.__init__(shared_health, stuck_after_s=5.0, clock=clock)
    return shared_health


@pytest.fixture
def server(shared_server: HealthServer, health: Health) -> HealthServer:
    """The module's server, with its Health reset (see `health`)."""
    return shared_server


def test_binds_an_ephemeral_port(server: HealthServer) -> None:
    assert server.port > 0


def test_before_assignment_alive_but_not_ready(server: HealthServer) -> None:
    status, body, ctype = get(server.port, "/healthz")
    assert (status, body.strip()) == (200, "starting")
    assert ctype.startswith("text/plain")
    status, body, _ = get(server.port, "/readyz")
    assert status == 503 and "no partitions assigned" in body


def test_beating_loop_without_partitions_is_alive_not_ready(
    server: HealthServer, health: Health
) -> None:
    health.beat()
    assert get(server.port, "/healthz")[0] == 200
    assert get(server.port, "/readyz")[0] == 503


def test_processing_is_alive_and_ready(
    server: HealthServer, health: Health, clock: FakeClock
) -> None:
    health.beat()
    health.set_partitions(2)
    clock.now += 1.0
    status, body, _ = get(server.port, "/healthz")
    assert status == 200 and "beat 1.0s ago" in body
    status, body, _ = get(server.port, "/readyz")
    assert status == 200 and "2 partition(s) assigned" in body


def test_restoring_state_is_not_ready(server: HealthServer, health: Health) -> None:
    health.beat()
    health.set_partitions(2, restoring=True)
    assert get(server.port, "/healthz")[0] == 200
    status, body, _ = get(server.port, "/readyz")
    assert status == 503 and "restoring" in body


def test_a_long_restore_is_alive_and_not_ready(server: HealthServer, health: Health,
                                                clock: FakeClock) -> None:
    """A restore waiting for a crashed instance's transaction takes about 70 s: a liveness
    probe that killed it there would only start it over."""
    health.beat()
    health.set_partitions(2, restoring=True)
    clock.now += 70.0
    status, body, _ = get(server.port, "/healthz")
    assert status == 200 and "restoring" in body
    assert get(server.port, "/readyz")[0] == 503
    health.set_partitions(2)  # restored; the loop has not polled since
    assert get(server.port, "/healthz")[0] == 503


def test_stuck_loop_fails_both_probes_and_recovers(
    server: HealthServer, health: Health, clock: FakeClock
) -> None:
    health.beat()
    health.set_partitions(4)
    clock.now += 5.0  # exactly at the limit: still alive
    assert get(server.port, "/healthz")[0] == 200
    clock.now += 0.5
    status, body, _ = get(server.port, "/healthz")
    assert status == 503 and "stuck" in body
    status, body, _ = get(server.port, "/readyz")
    assert status == 503 and "stuck" in body
    health.beat()  # the loop turns again
    assert get(server.port, "/healthz")[0] == 200
    assert get(server.port, "/readyz")[0] == 200


def test_stuck_with_a_real_clock() -> None:
    """A tiny stuck_after_s and no beat after the first: 503 on both, with time.monotonic."""
    import time

    health = Health(stuck_after_s=0.05)
    srv = HealthServer(CollectorRegistry(), health, "127.0.0.1", 0)
    try:
        health.beat()
        health.set_partitions(1)
        assert get(srv.port, "/readyz")[0] == 200
        time.sleep(0.15)
        assert get(srv.port, "/healthz")[0] == 503
        assert get(srv.port, "/readyz")[0] == 503
    finally:
        srv.shutdown()


def test_after_stop_both_probes_fail(server: HealthServer, health: Health) -> None:
    health.beat()
    health.set_partitions(3)
    health.set_stopped()
    for path in ("/healthz", "/readyz"):
        status, body, _ = get(server.port, path)
        assert status == 503 and "stopped" in body, path


def test_metrics_serves_the_registry(
    server: HealthServer, registry: CollectorRegistry
) -> None:
    Metrics(registry)  # the module's registry is only filled here
    extra = Counter("probe_test_hits", "A counter only this test registers.", registry=registry)
    extra.inc(3)
    status, body, ctype = get(server.port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain") and "version=" in ctype  # Prometheus text format
    assert "probe_test_hits_total 3.0" in body
    assert 'fraudstream_events_total{outcome="scored"} 0.0' in body
    assert "fraudstream_build_info{" in body


class _ScrapeOnRegister(CollectorRegistry):
    """A registry that scrapes each collector the moment it is registered: what a scrape
    racing the scorer's start-up would read."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list[dict[str, str]]] = {}

    def register(self, collector: object) -> None:
        super().register(collector)  # type: ignore[arg-type]
        for family in collector.collect():  # type: ignore[attr-defined]
            self.seen[family.name] = [dict(s.labels) for s in family.samples]


def test_build_info_is_never_scraped_without_its_labels() -> None:
    # The health server starts before the scorer connects and builds its metrics; CI once
    # scraped `fraudstream_build_info 1.0` between the Info's registration and its values.
    registry = _ScrapeOnRegister()
    Metrics(registry)
    (labels,) = registry.seen["fraudstream_build"]
    assert labels["model_loops"] in ("compiled", "python") and "river" in labels


def test_query_strings_are_ignored(server: HealthServer) -> None:
    assert get(server.port, "/healthz?verbose=1")[0] == 200
    assert get(server.port, "/metrics?name[]=x")[0] == 200


@pytest.mark.parametrize("path", ["/", "/health", "/metrics/extra", "/readyz/", "/favicon.ico"])
def test_unknown_paths_are_404(server: HealthServer, path: str) -> None:
    status, body, _ = get(server.port, path)
    assert status == 404 and "not found" in body


def test_an_unreachable_broker_is_alive_but_not_ready(
    server: HealthServer, health: Health, clock: FakeClock
) -> None:
    """A broker outage: the loop keeps beating (the clients retry inside it), and a restart
    would not help, so /healthz stays 200; but the instance is not scoring, so /readyz is
    503 until the broker answers again."""
    health.beat()
    health.set_partitions(4)
    health.set_broker_reachable(False)
    clock.now += 3.0
    health.beat()
    health.set_broker_reachable(False)  # still down: the outage keeps its start
    assert get(server.port, "/healthz")[0] == 200
    status, body, _ = get(server.port, "/readyz")
    assert status == 503 and "Kafka unreachable for 3.0s" in body
    health.set_broker_reachable(True)
    assert get(server.port, "/readyz")[0] == 200


def test_checkpoints_that_keep_failing_make_it_unready_then_dead(
    server: HealthServer, health: Health, clock: FakeClock
) -> None:
    """A loop that turns but whose every checkpoint fails (a poison record rewound for ever
    used to keep both probes at 200): unready at the first failure, dead once failing for
    stuck_after_s with the broker reachable, both healthy again after a checkpoint."""
    health.beat()
    health.set_partitions(4)
    health.set_checkpoint_failures(1)
    status, body, _ = get(server.port, "/readyz")
    assert status == 503 and "checkpoints failing: 1 in a row" in body
    assert get(server.port, "/healthz")[0] == 200
    clock.now += 6.0
    health.beat()
    health.set_checkpoint_failures(40)  # still failing: the streak keeps its start
    status, body, _ = get(server.port, "/healthz")
    assert status == 503 and "checkpoints failing for 6.0s" in body
    health.set_broker_reachable(False)  # an outage: a restart would not help
    assert get(server.port, "/healthz")[0] == 200
    health.set_broker_reachable(True)
    health.set_checkpoint_failures(0)
    assert get(server.port, "/healthz")[0] == 200 and get(server.port, "/readyz")[0] == 200


def test_the_broker_probe_drives_readiness() -> None:
    """The probe's TCP connect, against a port that refuses and then accepts."""
    from stream.devtools.broker import find_free_port
    from stream.observability.lag import BrokerProbe

    port = find_free_port()
    health = Health(stuck_after_s=60.0)
    health.beat()
    health.set_partitions(1)
    registry = CollectorRegistry()
    probe = BrokerProbe(Metrics(registry), f"127.0.0.1:{port}", every_s=0.05,
                        health=health).start()
    try:
        deadline = time.monotonic() + 5
        while health.ready()[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert health.ready()[0] is False and "Kafka unreachable" in health.ready()[1]
        assert registry.get_sample_value("fraudstream_broker_up") == 0
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.listen()
            deadline = time.monotonic() + 5
            while not health.ready()[0] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert health.ready() == (True, "1 partition(s) assigned")
    finally:
        probe.stop()


# -- the server under idle and slow clients ---------------------------------------------------
def _connect(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_many_idle_connections_cost_no_threads_and_the_endpoints_still_answer() -> None:
    """400 connections that never send a byte (the report in issue 13): the server keeps its
    fixed threads and answers every endpoint at once, in less than a second each."""
    health = Health(stuck_after_s=60.0)
    health.beat()
    health.set_partitions(1)
    registry = CollectorRegistry()
    Metrics(registry)
    before = set(threading.enumerate())
    srv = HealthServer(registry, health, "127.0.0.1", 0, workers=3)
    idle: list[socket.socket] = []
    try:
        idle = _connect(srv.port, 400)
        assert _wait_for(lambda: srv.open_connections() == 400)
        for _ in range(5):
            for path, status in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200)):
                started = time.monotonic()
                assert get(srv.port, path)[0] == status
                assert time.monotonic() - started < 1.0, path
        started_by_server = set(threading.enumerate()) - before
        assert len(started_by_server) <= 3 + 1, sorted(t.name for t in started_by_server)
    finally:
        for conn in idle:
            conn.close()
        srv.shutdown()
    assert not [t for t in started_by_server if t.is_alive()]


def test_idle_and_trickling_connections_are_closed_after_the_head_timeout() -> None:
    srv = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0, head_timeout_s=0.3)
    try:
        idle = _connect(srv.port, 20)
        trickling = _connect(srv.port, 5)
        for conn in trickling:
            conn.sendall(b"GET /metr")  # a request that never ends (slowloris)
        assert _wait_for(lambda: srv.open_connections() == 25, 5.0)
        assert _wait_for(lambda: srv.open_connections() == 0, 5.0)
        for conn in idle + trickling:  # closed by the server: the client reads EOF
            assert conn.recv(1) == b""
            conn.close()
        assert get(srv.port, "/healthz")[0] == 200
    finally:
        srv.shutdown()


def test_beyond_max_connections_the_oldest_waiting_one_is_closed() -> None:
    srv = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0, max_connections=10)
    try:
        first = _connect(srv.port, 1)[0]
        assert _wait_for(lambda: srv.open_connections() == 1)
        rest = _connect(srv.port, 15)
        assert _wait_for(lambda: srv.open_connections() == 10)
        assert first.recv(1) == b""  # the oldest went first
        assert get(srv.port, "/healthz")[0] == 200
        for conn in [first, *rest]:
            conn.close()
    finally:
        srv.shutdown()


def test_oversized_request_heads_are_refused() -> None:
    srv = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0, max_head=1024)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as conn:
            try:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * 4096 + b"\r\n\r\n")
            except OSError:
                pass  # reset while sending: refused all the same
            try:
                assert conn.recv(100) == b""
            except ConnectionResetError:
                pass
        assert get(srv.port, "/healthz")[0] == 200
    finally:
        srv.shutdown()


def test_the_listen_backlog_is_not_five() -> None:
    srv = HealthServer(CollectorRegistry(), Health(), "127.0.0.1", 0)
    try:
        assert srv._server.request_queue_size >= 128
        # What the kernel holds for a listening socket (ss shows it as Send-Q).
        assert _listen_backlog(srv.port) in (None, 128) or _listen_backlog(srv.port) >= 128
    finally:
        srv.shutdown()


def _listen_backlog(port: int) -> int | None:
    """The backlog of the listening socket on `port`, from `ss -ltn` (None: no ss here)."""
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=False).stdout.split()
    return int(out[2]) if len(out) > 2 and out[2].isdigit() else None
