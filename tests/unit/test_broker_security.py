"""The local broker's SSL and SASL listeners, as properties and storage-format arguments
(the broker itself runs in tests/integration/test_security.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.devtools.broker import BrokerError, LocalBroker
from stream.devtools.broker_security import BrokerSecurity
from stream.errors import ConfigError


def test_no_security_adds_nothing_to_the_template() -> None:
    assert BrokerSecurity().protocols() == ()
    assert set(BrokerSecurity().properties({}, None).values()) == {""}


def test_tls_and_users_open_three_listeners_with_their_settings() -> None:
    security = BrokerSecurity(Path("b.pem"), Path("b.key"), {"scorer": "pw1", "ops": "pw2"})
    ports = {"SSL": 1001, "SASL_PLAINTEXT": 1002, "SASL_SSL": 1003}
    props = security.properties(ports, Path("/data/broker-keystore.pem"))
    assert props["secure_listeners"] == (",SSL://127.0.0.1:1001,SASL_PLAINTEXT://127.0.0.1:1002"
                                         ",SASL_SSL://127.0.0.1:1003")
    assert props["secure_advertised"] == props["secure_listeners"]
    assert props["secure_map"] == ",SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    lines = props["secure_settings"].splitlines()
    assert "ssl.keystore.type=PEM" in lines
    assert "ssl.keystore.location=/data/broker-keystore.pem" in lines
    assert "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" in lines
    plain = [line for line in lines if ".plain.sasl.jaas.config=" in line]
    assert len(plain) == 2  # one per SASL listener
    assert all('user_ops="pw2" user_scorer="pw1";' in line for line in plain)
    assert sum(".scram-sha-512.sasl.jaas.config=" in line for line in lines) == 2


def test_scram_credentials_are_written_at_format_time() -> None:
    args = BrokerSecurity(users={"scorer": "pw1"}).scram_arguments()
    assert args == ["--add-scram", "SCRAM-SHA-256=[name=scorer,password=pw1]",
                    "--add-scram", "SCRAM-SHA-512=[name=scorer,password=pw1]"]


@pytest.mark.parametrize("users", [{"scorer": 'pa"ss'}, {"sc,orer": "pw"}, {"scorer": ""},
                                   {"scorer": "a b"}])
def test_names_and_passwords_that_would_break_jaas_or_format_syntax_are_refused(
        users: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="letters, digits"):
        BrokerSecurity(users=users)


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match="certfile and keyfile"):
        BrokerSecurity(certfile=Path("b.pem"))


def test_listeners_get_distinct_free_ports_and_addresses() -> None:
    broker = LocalBroker(port=19092, data_dir=Path("/tmp/unused"),
                         security=BrokerSecurity(Path("b.pem"), Path("b.key"), {"u": "p"}))
    ports = broker.secure_ports
    assert set(ports) == {"SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    assert len({19092, 19093, *ports.values()}) == 5
    assert broker.bootstrap_for("PLAINTEXT") == "127.0.0.1:19092"
    assert broker.bootstrap_for("SSL") == f"127.0.0.1:{ports['SSL']}"
    with pytest.raises(BrokerError, match="no SSL listener"):
        LocalBroker(port=19092).bootstrap_for("SSL")


def test_an_encrypted_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "b.key").write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    broker = LocalBroker(port=19092, data_dir=tmp_path,
                         security=BrokerSecurity(tmp_path / "b.pem", tmp_path / "b.key"))
    with pytest.raises(BrokerError, match="unencrypted key"):
        broker._keystore()


def test_a_data_dir_formatted_for_other_users_is_refused(tmp_path: Path) -> None:
    """SCRAM users are written when the storage is formatted, never later."""
    first = LocalBroker(port=19092, data_dir=tmp_path,
                        security=BrokerSecurity(users={"scorer": "pw1"}))
    first._check_users()  # what a first start records, before it formats
    (tmp_path / "kraft-logs").mkdir()
    (tmp_path / "kraft-logs" / "meta.properties").write_text("formatted\n")
    first._check_users()  # the same users again: fine
    other = LocalBroker(port=19092, data_dir=tmp_path,
                        security=BrokerSecurity(users={"scorer": "pw2"}))
    with pytest.raises(BrokerError, match="formatted for other SASL users"):
        other._check_users()
    with pytest.raises(BrokerError, match="formatted for other SASL users"):
        LocalBroker(port=19092, data_dir=tmp_path)._check_users()
