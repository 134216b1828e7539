"""/healthz, /readyz and /metrics of HealthServer, through real HTTP on an ephemeral port.

The clock is injected, so "stuck" is tested without sleeping past a timeout.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

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


def test_the_broker_probe_drives_readiness() -> None:
    """The probe's TCP connect, against a port that refuses and then accepts."""
    import socket
    import time

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
