"""TLS and SASL against a real broker, on both adapters (the `kafka_client` fixture).

The broker is this module's own: the local Kafka 4 (`LocalBroker`) with an SSL, a
SASL_PLAINTEXT and a SASL_SSL listener beside its PLAINTEXT one (`BrokerSecurity`), a
certificate signed by a CA this module makes (tls_support.py), and one SASL user whose
SCRAM-SHA-256/512 credentials `kafka-storage format --add-scram` writes (PLAIN's are in the
listener's JAAS configuration). Every client is built from Settings, as the scorer builds
them; the CLI runs in a subprocess, exactly as from a shell.

- SSL with ssl_cafile: topics, a transactional send, a read_committed read back;
- SASL_SSL with SCRAM-SHA-512: `stream topics apply`, `stream produce`, `stream run`;
- a wrong password: one `error:` line that says "authentication failed";
- a CA that did not sign the broker's certificate: one `error:` line, "TLS handshake failed";
- `--log-level DEBUG` with SASL/PLAIN (the password crosses the wire in the clear, and
  kafka-python logs the request that carries it) and SCRAM: the password is in no line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_adapters_support import T, drain
from pydantic import SecretStr
from tls_support import TlsFiles, make_ca_and_broker_cert

from stream.config import Settings, load_settings
from stream.devtools.broker import LocalBroker, find_free_port
from stream.devtools.broker_security import BrokerSecurity
from stream.kafka.clients import connect
from stream.kafka.records import BEGINNING

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "scorer", "Zebra-Staple-Battery-42"

pytestmark = pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                                reason="the local broker with TLS and SASL needs java and mvn")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_ca_and_broker_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_broker(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[LocalBroker]:
    broker = LocalBroker(port=find_free_port(), data_dir=tmp_path_factory.mktemp("kafka-sec"),
                         security=BrokerSecurity(tls.certfile, tls.keyfile, {USER: PASSWORD}))
    try:
        broker.start(timeout_s=120)
        yield broker
    finally:
        broker.stop()


STATE_KEY = "security-tests-state-key-0123456789abcdef"


def _settings(broker: LocalBroker, protocol: str, client: str, tls: TlsFiles | None = None,
              mechanism: str | None = None, password: str = PASSWORD) -> Settings:
    values: dict[str, Any] = {"bootstrap_servers": broker.bootstrap_for(protocol),
                              "security_protocol": protocol, "kafka_client": client,
                              "group_id": f"sec-{uuid.uuid4().hex[:8]}"}
    if tls is not None:
        values["ssl_cafile"] = str(tls.cafile)
    if mechanism is not None:
        values.update(sasl_mechanism=mechanism, sasl_plain_username=USER,
                      sasl_plain_password=SecretStr(password))
    return load_settings(environ={}, **values)


def _round_trip(settings: Settings) -> None:
    """Create a topic, send one record in a transaction, read it back read_committed."""
    clients = connect(settings)
    topic = f"sec-{uuid.uuid4().hex[:10]}"
    admin = clients.admin()
    try:
        assert admin.create_topics({topic: (1, 1, {})}) == {topic: None}
        assert admin.topics()[topic] == 1
        producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
        try:
            producer.init_transactions(T)
            producer.begin_transaction()
            producer.send(topic, b"card-1", b'{"secure": true}')
            producer.commit_transaction(T)
        finally:
            producer.close(T)
        reader = clients.reader()
        try:
            reader.assign({(topic, 0): BEGINNING})
            records, _ = drain(reader, 1)
        finally:
            reader.close()
        assert [(r.key, r.value) for r in records] == [(b"card-1", b'{"secure": true}')]
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_tls_with_the_ca_file(secure_broker: LocalBroker, tls: TlsFiles,
                              kafka_client: str) -> None:
    _round_trip(_settings(secure_broker, "SSL", kafka_client, tls))


def test_scram_sha_512_over_tls(secure_broker: LocalBroker, tls: TlsFiles,
                                kafka_client: str) -> None:
    _round_trip(_settings(secure_broker, "SASL_SSL", kafka_client, tls, "SCRAM-SHA-512"))


# -- the CLI, as from a shell -------------------------------------------------------------------
def _stream(broker: LocalBroker, protocol: str, client: str, *args: str,
            tls: TlsFiles | None = None, mechanism: str | None = None,
            password: str = PASSWORD, topics: str = "") -> subprocess.CompletedProcess[str]:
    """`stream` with the security options on the command line (the password through the
    environment, as README recommends), and this test's own topic names."""
    argv = [sys.executable, "-m", "stream", "--kafka-client", client,
            "--bootstrap-servers", broker.bootstrap_for(protocol),
            "--security-protocol", protocol]
    if tls is not None:
        argv += ["--ssl-cafile", str(tls.cafile)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FRAUDSTREAM_", "KAFKA_BOOTSTRAP"))}
    # A secured cluster is a deployment: its state key comes from the environment (README
    # "Security"); without one the scorer refuses to start there.
    env["FRAUDSTREAM_STATE_KEY"] = STATE_KEY
    if mechanism is not None:
        argv += ["--sasl-mechanism", mechanism, "--sasl-username", USER]
        env["FRAUDSTREAM_SASL_PLAIN_PASSWORD"] = password
    if topics:
        env.update({f"FRAUDSTREAM_{role.upper()}_TOPIC": f"{topics}-{role}"
                    for role in ("input", "output", "labels", "dlq", "changelog")})
        env["FRAUDSTREAM_GROUP_ID"] = topics
    return subprocess.run([*argv, *args], cwd=ROOT, env=env, text=True, capture_output=True,
                          timeout=300, check=False)


def test_the_scorer_runs_over_sasl_ssl_with_scram(secure_broker: LocalBroker, tls: TlsFiles,
                                                  kafka_client: str) -> None:
    topics = f"scram-{kafka_client}-{uuid.uuid4().hex[:6]}"
    for args in (["topics", "apply"], ["produce", "--count", "300", "--no-progress"],
                 ["run", "--max-events", "300"]):
        done = _stream(secure_broker, "SASL_SSL", kafka_client, *args, tls=tls,
                       mechanism="SCRAM-SHA-512", topics=topics)
        assert done.returncode == 0, (args, done.stderr[-3000:])
        assert PASSWORD not in done.stdout + done.stderr
    assert "processed 300 records: 300 verdicts" in done.stderr


@pytest.mark.parametrize("command", [["topics", "apply"], ["run", "--max-events", "1"]])
def test_a_wrong_password_is_one_error_line_that_says_authentication_failed(
        secure_broker: LocalBroker, tls: TlsFiles, kafka_client: str,
        command: list[str]) -> None:
    done = _stream(secure_broker, "SASL_SSL", kafka_client, *command, tls=tls,
                   mechanism="SCRAM-SHA-512", password="not-the-password",
                   topics=f"wrong-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "authentication failed" in done.stderr
    assert "cannot reach" not in done.stderr and "not-the-password" not in done.stderr


def test_a_ca_that_did_not_sign_the_broker_is_one_error_line(
        secure_broker: LocalBroker, kafka_client: str, tmp_path: Path) -> None:
    other = make_ca_and_broker_cert(tmp_path, ca_name="some other CA")
    done = _stream(secure_broker, "SSL", kafka_client, "run", "--max-events", "1", tls=other,
                   topics=f"ca-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "TLS handshake failed" in done.stderr and "certificate verify failed" in done.stderr


@pytest.mark.parametrize(("protocol", "mechanism"), [("SASL_PLAINTEXT", "PLAIN"),
                                                     ("SASL_SSL", "SCRAM-SHA-512")])
def test_debug_logs_never_show_the_password(
        secure_broker: LocalBroker, tls: TlsFiles, kafka_client: str, protocol: str,
        mechanism: str) -> None:
    """`--log-level DEBUG` shows the clients' own lines, kafka-python's request dumps and
    admin configuration included: the password must be masked in every one of them."""
    done = _stream(secure_broker, protocol, kafka_client, "--log-level", "DEBUG",
                   "topics", "apply", tls=tls if protocol.endswith("SSL") else None,
                   mechanism=mechanism, topics=f"debug-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 0, done.stderr[-3000:]
    logs = done.stdout + done.stderr
    if kafka_client == "kafka-python":  # librdkafka logs at most errors, never its config
        assert " DEBUG kafka." in logs  # the clients' own lines really were shown
        assert "SaslAuthenticateRequest" in logs  # the line that used to carry it was there
        assert "sasl_plain_password': '**********'" in logs  # the admin configuration dump
    assert PASSWORD not in logs
    assert PASSWORD.encode().hex() not in logs
