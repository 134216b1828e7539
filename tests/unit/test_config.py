from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.assembly import pipeline_config
from stream.config import load_settings
from stream.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[kafka]\nbootstrap_servers = "file:1"\n[model]\nreview_threshold = 0.3\n'
                    'decline_threshold = 0.7\ngroup_id = "from-file"\n')
    defaults = load_settings(environ={})
    assert defaults.bootstrap_servers == "localhost:9092" and defaults.group_id == "fraud-stream"
    from_file = load_settings(toml, environ={})
    assert from_file.bootstrap_servers == "file:1" and from_file.review_threshold == 0.3
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:1", "FRAUDSTREAM_GROUP_ID": "from-env"}
    from_env = load_settings(toml, environ=env)
    assert from_env.bootstrap_servers == "env:1" and from_env.group_id == "from-env"
    assert from_env.review_threshold == 0.3
    flags = load_settings(toml, environ=env, bootstrap_servers="flag:1", group_id=None)
    assert flags.bootstrap_servers == "flag:1" and flags.group_id == "from-env"


def test_settings_are_frozen_and_hide_secrets() -> None:
    settings = load_settings(environ={"FRAUDSTREAM_SASL_PLAIN_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    # Each client adapter's one translation of the settings passes the password on.
    from stream.kafka.kafkapython import connection_options
    from stream.kafka.rdkafka import connection_config

    assert connection_config(settings)["sasl.password"] == "hunter2"
    assert connection_options(settings)["sasl_plain_password"] == "hunter2"
    with pytest.raises(ValidationError):
        settings.group_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "message"),
    [("nonsense = 1\n", "unknown setting"), ("review_threshold = 0.9\n", "review_threshold"),
     ("= broken", "not valid TOML")],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(toml, environ={})


def test_missing_file_and_bad_env() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(Path("/nonexistent.toml"), environ={})
    with pytest.raises(ConfigError, match="max_poll_records"):
        load_settings(environ={"FRAUDSTREAM_MAX_POLL_RECORDS": "-3"})


def test_challenger_names_are_validated_and_canonical_when_the_core_is_built() -> None:
    settings = load_settings(environ={}, challengers=("Logreg-Adam-lr0.010", "gnb"))
    assert pipeline_config(settings).oversight.challengers == ("logreg-adam-lr0.01", "gnb")
    assert pipeline_config(load_settings(environ={})).oversight.challengers == ()  # off
    for names, message in [(("forest",), "unknown challenger family"),
                           (("logreg-lr0.005-w5-avg3",), "champion model itself"),
                           (("gnb", "gnb"), "listed twice")]:
        with pytest.raises(ConfigError, match=message):
            pipeline_config(load_settings(environ={}, challengers=names))


@pytest.mark.parametrize(("values", "message"), [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
      "sasl_plain_username": "scorer"}, "needs sasl_plain_username and sasl_plain_password"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "FRAUDSTREAM_SASL_PLAIN"),
])
def test_incomplete_sasl_settings_are_one_config_error(values: dict[str, str],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, **values)


def test_sasl_from_the_environment_is_complete() -> None:
    settings = load_settings(environ={
        "FRAUDSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "FRAUDSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
        "FRAUDSTREAM_SASL_PLAIN_USERNAME": "scorer", "FRAUDSTREAM_SASL_PLAIN_PASSWORD": "pw"})
    assert settings.sasl_plain_password is not None
    assert settings.sasl_plain_password.get_secret_value() == "pw"


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_a_missing_ca_file_is_one_config_error(client: str, tmp_path: Path) -> None:
    from stream.kafka.clients import connect

    missing = tmp_path / "ca.pem"
    settings = load_settings(environ={}, security_protocol="SSL", ssl_cafile=str(missing),
                             kafka_client=client)
    with pytest.raises(ConfigError, match=f"ssl_cafile {missing}: no such file"):
        connect(settings)
    missing.write_text("not checked here: the handshake says whether it is the right CA\n")
    assert connect(settings).name == client


def test_both_adapters_fetch_as_the_settings_say() -> None:
    """The group consumer's fetch batching reaches each client under its own names (a fetch
    per producer batch cost the broker 0.06-0.14 of a core at 2,000 events/s)."""
    from stream.kafka.kafkapython import group_consumer_options
    from stream.kafka.rdkafka_consumer import group_config

    settings = load_settings(environ={"FRAUDSTREAM_FETCH_MIN_BYTES": "1000",
                                      "FRAUDSTREAM_FETCH_MAX_WAIT_MS": "7"})
    rd = group_config(settings)
    assert (rd["fetch.min.bytes"], rd["fetch.wait.max.ms"]) == (1000, 7)
    kp = group_consumer_options(settings)
    assert (kp["fetch_min_bytes"], kp["fetch_max_wait_ms"]) == (1000, 7)
    # Unset: batches on librdkafka; on kafka-python, whose every fetch response costs the
    # scorer's process Python time, a fetch as soon as one record is there.
    assert group_config(load_settings(environ={}))["fetch.wait.max.ms"] == 2
    kp_defaults = group_consumer_options(load_settings(environ={}, kafka_client="kafka-python"))
    assert (kp_defaults["fetch_min_bytes"], kp_defaults["fetch_max_wait_ms"]) == (1, 100)
    for bad in ({"FRAUDSTREAM_FETCH_MIN_BYTES": "0"}, {"FRAUDSTREAM_FETCH_MAX_WAIT_MS": "-1"}):
        with pytest.raises(ConfigError, match="fetch_m"):
            load_settings(environ=bad)


@pytest.mark.parametrize(("client", "values", "message"), [
    ("kafka-python", {"FRAUDSTREAM_REQUEST_TIMEOUT_MS": "100"},
     r"fetch_max_wait_ms 100 \(kafka-python's default\) must be below request_timeout_ms 100"),
    ("librdkafka", {"FRAUDSTREAM_FETCH_MAX_WAIT_MS": "5000",
                    "FRAUDSTREAM_REQUEST_TIMEOUT_MS": "5000"},
     "fetch_max_wait_ms 5000 must be below request_timeout_ms 5000"),
    ("librdkafka", {"FRAUDSTREAM_REQUEST_TIMEOUT_MS": "20"},
     "request_timeout_ms 20 must be above 20, the fetch wait of the readers"),
    ("kafka-python", {"FRAUDSTREAM_REQUEST_TIMEOUT_MS": "540000"},
     r"below kafka-python's connections_max_idle_ms \(540000\)"),
])
def test_a_fetch_wait_no_request_outlasts_is_refused_when_read(
        client: str, values: dict[str, str], message: str) -> None:
    """Found by hand: kafka-python refused to build such a consumer, which `stream run`
    reported as "cannot reach Kafka ...; is the broker up?"; librdkafka built it and timed
    quiet fetches out."""
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"FRAUDSTREAM_KAFKA_CLIENT": client, **values})


def test_the_fetch_check_is_kafka_pythons_own() -> None:
    """What the settings refuse, kafka-python's consumer refuses too (before it connects);
    what they accept reaches it unchanged."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError

    from stream.kafka.kafkapython import group_consumer_options

    with pytest.raises(KafkaConfigurationError, match="fetch_max_wait_ms"):
        KafkaConsumer(bootstrap_servers="localhost:1", request_timeout_ms=100,
                      fetch_max_wait_ms=100)
    settings = load_settings(environ={}, kafka_client="kafka-python", request_timeout_ms=101)
    options = group_consumer_options(settings)
    assert (options["fetch_max_wait_ms"], options["request_timeout_ms"]) == (100, 101)
