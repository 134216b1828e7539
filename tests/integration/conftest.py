"""One real Kafka broker per test session, and a fresh uuid-named topic per test.

The broker is chosen in order: `KAFKA_BOOTSTRAP_SERVERS` if set; the `apache/kafka` image via
testcontainers if the package is installed and a Docker engine answers; else the local KRaft
broker run with Java (`stream.devtools.broker.LocalBroker`) on a free port with a temp data dir.

testcontainers' own `KafkaContainer` drives Confluent's start scripts and cannot boot the
`apache/kafka` image, so a plain `DockerContainer` is configured through the image's
`KAFKA_*` environment instead, with the same host port inside and out so the advertised
listener is right from the first byte.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.devtools.broker import BrokerError, LocalBroker, find_free_port, is_answering

KAFKA_IMAGE = "apache/kafka:4.1.1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs a broker: mark it so `-m 'not integration'`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _docker_answers() -> bool:
    """True only when testcontainers is installed and a Docker engine answers, quickly."""
    try:
        import docker  # type: ignore[import-not-found]
        import testcontainers.core.container  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no"
        return False


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """`apache/kafka` in KRaft combined mode, listening on the same port inside and outside."""
    from testcontainers.core.container import DockerContainer

    port = find_free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
    try:
        host = container.get_container_host_ip()
    except Exception:  # noqa: BLE001
        host = "localhost"
    env = {
        "CLUSTER_ID": "5L6g3nShT-eMCtK--X86sw",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    for key, value in env.items():
        container = container.with_env(key, value)
    with container:
        bootstrap = f"{host}:{port}"
        deadline = time.monotonic() + 120
        while not is_answering(bootstrap, 2.0):
            if time.monotonic() > deadline:
                raise BrokerError(f"{KAFKA_IMAGE} did not answer on {bootstrap}")
            time.sleep(0.5)
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker. Tests may still use kafka-python's clients directly as tooling
    (to create, read and inspect topics); what they test goes through stream.kafka."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if _docker_answers():
        with _kafka_container() as bootstrap:
            yield bootstrap
        return
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start(timeout_s=120)
    finally:
        broker.stop()


KAFKA_CLIENTS = ("librdkafka", "kafka-python")


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Every test that asks for it runs once per client adapter (the `kafka_client` setting)."""
    return str(request.param)


@pytest.fixture
def clients(kafka_bootstrap: str, kafka_client: str) -> Any:
    """The project's own Kafka clients (stream.kafka.clients) on the chosen adapter."""
    from stream.config import load_settings
    from stream.kafka.clients import connect

    return connect(load_settings(environ={}, bootstrap_servers=kafka_bootstrap,
                                 kafka_client=kafka_client,
                                 group_id=f"it-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[Any]:
    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="fraud-stream-tests")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def new_topic(admin: Any) -> Iterator[Callable[..., str]]:
    """Factory: `new_topic(partitions=1, prefix="t", configs=None)` creates a fresh topic (with
    topic `configs`, such as max.message.bytes) and returns its name.

    Topics are deleted at the end of the test so a long session does not pile them up.
    """
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "t",
             configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        options: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
        if configs:
            options["configs"] = configs
        admin.create_topics({name: options}, wait_for_metadata=True)
        created.append(name)
        return name

    yield make
    if created:
        try:
            admin.delete_topics(created, raise_errors=False)
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass
