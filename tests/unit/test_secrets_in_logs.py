"""The SASL password never appears in a log line, at DEBUG, whichever client runs.

kafka-python logs every request it sends at DEBUG (kafka/net/connection.py:
`log.debug('%s Request %d: %s', self, correlation_id, request)`), and SASL/PLAIN's
SaslAuthenticate request carries `\\0user\\0password` in clear; its admin client logs its whole
configuration. These tests build the clients the way the CLI does (connect(settings), with the
password from the command line), then log what kafka-python logs. The same check against a
real SASL broker, through the CLI, is tests/integration/test_security.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from kafka.protocol.sasl import SaslAuthenticateRequest
from pydantic import SecretStr

from stream.cli import main
from stream.config import load_settings
from stream.devtools.broker import find_free_port
from stream.kafka.clients import CLIENTS, connect
from stream.kafka.redact import MASK, scrub

PASSWORD = "Tr0ub4dor&3-unit"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _settings(client: str, password: str = PASSWORD) -> object:
    return load_settings(
        environ={}, bootstrap_servers=f"127.0.0.1:{find_free_port()}",
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_plain_username="scorer",
        sasl_plain_password=SecretStr(password), kafka_client=client,
        bootstrap_timeout_ms=300, request_timeout_ms=300)


@pytest.mark.parametrize("client", CLIENTS)
def test_building_every_client_at_debug_logs_no_password(
    client: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    clients = connect(_settings(client))  # type: ignore[arg-type]
    for make in (clients.admin, clients.group_consumer, clients.reader):
        try:
            made = make()
        except Exception:  # noqa: BLE001 - nothing listens: kafka-python fails to bootstrap
            continue
        made.close()
    # What kafka-python's connection logs when it authenticates with SASL/PLAIN:
    token = b"\x00scorer\x00" + PASSWORD.encode()
    logging.getLogger("kafka.net.connection").debug(
        "%s Request %d: %s", "<KafkaConnection node_id=bootstrap-0>", 3,
        SaslAuthenticateRequest(token))
    # ... and the admin client's configuration dump, were it given the plain string:
    logging.getLogger("kafka.admin.client").debug(
        "Starting KafkaAdminClient with configuration: %s", {"sasl_plain_password": PASSWORD})
    assert debug_logs.records, "DEBUG logging captured nothing"
    assert PASSWORD not in debug_logs.text
    assert MASK in debug_logs.text


def test_a_password_with_quotes_and_backslashes_is_masked_in_every_form(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    from stream.kafka.rdkafka import connection_config

    tricky = "it's a \\ \"pass\"\tword-unit"
    config = connection_config(_settings("librdkafka", tricky))  # type: ignore[arg-type]
    assert config["sasl.password"] == tricky  # the client itself still gets the real value
    log = logging.getLogger("rdkafka")
    log.debug("plain %s", tricky)
    log.debug("repr %r", tricky)
    log.debug("bytes %r", b"\x00u\x00" + tricky.encode())
    log.debug("json %s", json.dumps({"p": tricky}))
    assert [MASK in r.getMessage() for r in debug_logs.records[-4:]] == [True] * 4
    assert "word-unit" not in debug_logs.text


def test_a_traceback_is_masked_too(debug_logs: pytest.LogCaptureFixture) -> None:
    from stream.kafka.kafkapython import connection_options

    options = connection_options(_settings("kafka-python"))  # type: ignore[arg-type]
    assert options["sasl_plain_password"].encode() == PASSWORD.encode()
    try:
        raise ValueError(f"bad password {PASSWORD}")
    except ValueError:
        logging.getLogger("kafka").debug("failed", exc_info=True)
    assert "bad password" in debug_logs.text
    assert PASSWORD not in debug_logs.text
    assert scrub(f"x {PASSWORD} y") == f"x {MASK} y"


@pytest.mark.parametrize("client", CLIENTS)
def test_the_cli_at_debug_logs_no_password(
    client: str, debug_logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`stream --log-level DEBUG topics apply` with a password on the command line, against a
    port where nothing listens: one error line, and the password nowhere."""
    password = f"{PASSWORD}-{client}"
    monkeypatch.setenv("FRAUDSTREAM_BOOTSTRAP_TIMEOUT_MS", "300")
    monkeypatch.setenv("FRAUDSTREAM_REQUEST_TIMEOUT_MS", "300")
    argv = ["--log-level", "DEBUG", "--kafka-client", client,
            "--bootstrap-servers", f"127.0.0.1:{find_free_port()}",
            "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN",
            "--sasl-username", "scorer", "--sasl-password", password, "topics", "apply"]
    with pytest.raises(SystemExit):
        main(argv)
    captured = capsys.readouterr()
    logging.getLogger("kafka.net.connection").debug(
        "%s Request %d: %s", "<conn>", 1,
        SaslAuthenticateRequest(b"\x00scorer\x00" + password.encode()))
    assert password not in debug_logs.text
    assert password not in captured.err + captured.out
