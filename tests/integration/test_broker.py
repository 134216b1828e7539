"""The local broker: answers, reports status, survives a restart with its data, leaves no JVM."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from stream.devtools.broker import BrokerError, LocalBroker, find_free_port, is_answering

needs_java = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the local broker needs java and mvn",
)


def kafka_pids(data_dir: Path) -> list[int]:
    """Pids of Kafka JVMs started with a data dir: proof that nothing was left behind."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(data_dir).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_session_broker_answers(kafka_bootstrap: str) -> None:
    assert is_answering(kafka_bootstrap, timeout_s=10)


def test_closed_port_is_not_answering_and_says_so_fast() -> None:
    started = time.monotonic()
    assert not is_answering(f"127.0.0.1:{find_free_port()}", timeout_s=5)
    assert time.monotonic() - started < 2


def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path)
    status = broker.status()
    assert (status.pid, status.answering, status.running) == (None, False, False)
    assert status.bootstrap == broker.bootstrap
    assert broker.stop() is False


def test_start_on_a_port_where_another_broker_answers_says_so(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("session broker is not on this machine's loopback")
    with pytest.raises(BrokerError, match="already answering"):
        LocalBroker(port=int(port), data_dir=tmp_path).start(timeout_s=10)
    assert not (tmp_path / "kafka.pid").exists()


@needs_java
def test_restart_keeps_topics_and_leaves_no_jvm(tmp_path: Path) -> None:
    from kafka.admin import KafkaAdminClient

    data_dir = tmp_path / "broker"
    broker = LocalBroker(port=find_free_port(), data_dir=data_dir)
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    try:
        bootstrap = broker.start()
        status = broker.status()
        assert status.running and status.answering and status.bootstrap == bootstrap
        assert status.pid in kafka_pids(data_dir)
        meta = (broker.log_dir / "meta.properties").read_text()
        with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
            admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}},
                                wait_for_metadata=True)

        assert broker.stop() is True
        assert kafka_pids(data_dir) == []
        assert not broker.pid_file.exists()
        assert not broker.status().answering

        assert broker.start() == bootstrap
        assert (broker.log_dir / "meta.properties").read_text() == meta  # not reformatted
        with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
            assert topic in admin.list_topics()
            (described,) = admin.describe_topics([topic])
            assert len(described["partitions"]) == 2
        assert broker.start() == bootstrap  # idempotent while running
    finally:
        broker.stop()
    assert kafka_pids(data_dir) == []
    assert broker.status().pid is None


@needs_java
def test_a_broker_that_dies_during_start_reports_its_log(tmp_path: Path) -> None:
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path, heap="1k")
    try:
        with pytest.raises(BrokerError, match="(?s)exited during start-up.*heap"):
            broker.start(timeout_s=60)
    finally:
        broker.stop()
    assert kafka_pids(tmp_path) == []
    assert not broker.pid_file.exists()
