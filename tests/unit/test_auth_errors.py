"""A refused login (or an untrusted broker certificate) is reported as such, not as "cannot
reach Kafka", on both adapters, and the CLI prints one `error:` line that says so.

Neither client raises a refused login: both retry it until their call times out. These tests
feed each adapter's side channel (librdkafka's error callback, kafka-python's connection log)
the way the clients do; tests/integration/test_security.py does it against a real broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from kafka import errors as kerr

from stream.cli import app as cli_app
from stream.cli import main
from stream.cli.options import quiet_clients
from stream.config import load_settings
from stream.errors import AuthenticationError, InfrastructureError
from stream.kafka.classify import ClientError, FailureWatch, classify
from stream.kafka.kafkapython_errors import WATCH
from stream.kafka.rdkafka import _error_callback, explained
from stream.serving.wiring import not_connected

TIMEOUT = ClientError("Failed to get metadata: Local: Broker transport failure", kind="other")
SCRAM_REFUSED = ("sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: Authentication "
                 "failed during authentication due to invalid credentials with SASL mechanism "
                 "SCRAM-SHA-512")


def test_librdkafka_error_callback_explains_the_timeout_that_follows() -> None:
    watch = FailureWatch()
    on_error = _error_callback(watch)
    on_error(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert explained(TIMEOUT, watch) is TIMEOUT  # a plain outage stays an outage
    served: list[bool] = []
    on_error(KafkaError(KafkaError._AUTHENTICATION, SCRAM_REFUSED))
    error = explained(TIMEOUT, watch, lambda: served.append(True))
    assert served == [True]  # librdkafka runs its callbacks in poll: one was run first
    assert error.kind == "auth" and str(error).startswith("authentication failed: ")
    assert "invalid credentials" in str(error)
    assert isinstance(classify(error, "list topics"), AuthenticationError)


def test_librdkafka_failed_tls_handshake_is_an_auth_failure_that_names_the_ca() -> None:
    watch = FailureWatch()
    _error_callback(watch)(KafkaError(KafkaError._SSL, "SSL handshake failed: certificate "
                                                       "verify failed"))
    error = watch.explain(TIMEOUT)
    assert error.kind == "auth" and "TLS handshake failed" in str(error)
    assert "ssl_cafile" in str(error)


def test_a_non_timeout_error_is_never_rewritten() -> None:
    watch = FailureWatch()
    watch.saw_auth_failure("refused")
    fenced = ClientError("Broker: Producer fenced", kind="fenced", fatal=True)
    assert watch.explain(fenced) is fenced


def test_kafka_python_refusal_is_heard_from_its_connection_log() -> None:
    started = time.monotonic()
    timeout = ClientError("cannot create a kafka-python admin client: KafkaTimeoutError: "
                          "Unable to bootstrap from ['127.0.0.1:9093']", kind="timed_out")
    # What kafka-python logs when the broker refuses the login (kafka/net/connection.py):
    refused = kerr.SaslAuthenticationFailedError(
        "SaslAuthenticationFailedError: Authentication failed: Invalid username or password")
    logging.getLogger("kafka.net.connection").error(
        "%s: Connection lost: %s", "<KafkaConnection node_id=bootstrap-0>", refused)
    error = WATCH.explain(timeout, since=started)
    assert error.kind == "auth"
    assert str(error) == ("authentication failed: SaslAuthenticationFailedError: "
                          "Authentication failed: Invalid username or password")
    assert WATCH.explain(timeout, since=time.monotonic() + 1) is timeout  # an older refusal


def test_kafka_python_refusal_is_heard_when_the_cli_quiets_the_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The CLI keeps kafka-python's lines out of the log below DEBUG, at its handlers: the
    records are still made, so the adapter still hears the refusal."""
    quiet_clients(True)
    try:
        started = time.monotonic()
        logging.getLogger("kafka.net.manager").warning(
            "Bootstrap connection to %s failed: %s", "bootstrap-0",
            kerr.SaslAuthenticationFailedError("Invalid username or password"))
        assert WATCH.explain(TIMEOUT, since=started).kind == "auth"
        assert "Bootstrap connection" not in caplog.text  # quiet: not shown
    finally:
        quiet_clients(False)


def test_the_scorer_says_authentication_failed_not_cannot_reach() -> None:
    settings = load_settings(environ={}, bootstrap_servers="kafka:9093")
    refused = ClientError(f"authentication failed: {SCRAM_REFUSED}", kind="auth")
    error = not_connected(refused, settings)
    assert isinstance(error, AuthenticationError)
    assert "authentication failed" in str(error) and "cannot reach" not in str(error)
    assert "kafka:9093" in str(error)
    down = not_connected(ClientError("Local: Broker transport failure"), settings)
    assert isinstance(down, InfrastructureError) and "cannot reach Kafka" in str(down)


class _Refusing:
    """Clients whose every connection is refused, as the adapters report it."""

    name = "refusing"
    error = ClientError(f"authentication failed: {SCRAM_REFUSED}", kind="auth")

    def __init__(self, settings: Any) -> None:
        pass

    def admin(self) -> Any:
        raise self.error

    def group_consumer(self) -> Any:
        raise self.error

    def producer(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("argv", [["topics", "apply"], ["run", "--max-events", "1"],
                                  ["produce", "--count", "1", "--no-progress"]])
def test_the_cli_prints_one_error_line_that_says_authentication_failed(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_app, "connect", _Refusing)
    monkeypatch.setattr("stream.serving.wiring.connect", _Refusing)
    with pytest.raises(SystemExit) as exited:
        main(["--sasl-password", "wrong", *argv])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "authentication failed" in err and "cannot reach" not in err
    assert "Traceback" not in err and "wrong" not in err
