"""What a local broker needs to open SSL and SASL listeners: its certificate and SASL users.

`stream.devtools.broker.LocalBroker(security=BrokerSecurity(...))` opens them beside its
PLAINTEXT listener; this module turns them into broker properties and storage-format
arguments. Kafka's documentation, "Security": a PEM keystore (`ssl.keystore.type=PEM`) holds
the private key and then the certificate chain; SCRAM credentials live in the KRaft metadata
and are bootstrapped with `kafka-storage format --add-scram`; PLAIN's users are listed in
the listener's JAAS configuration (`user_<name>="<password>"`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import ConfigError

SECURE_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# What a user name or password may hold: it is written into JAAS and --add-scram syntax.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9._~!@#$%^&*+-]+")


@dataclass(frozen=True)
class BrokerSecurity:
    """Listeners a local broker opens beside its PLAINTEXT one, to try and test TLS and SASL.

    - `certfile` and `keyfile` (the broker's certificate chain and its unencrypted private
      key, PEM): an SSL listener;
    - `users` (name -> password): a SASL_PLAINTEXT listener that accepts PLAIN,
      SCRAM-SHA-256 and SCRAM-SHA-512. The SCRAM credentials are written into the storage
      when it is formatted (`kafka-storage format --add-scram`), PLAIN's into the listener's
      JAAS configuration;
    - both: a SASL_SSL listener as well.

    For development and tests only: the PLAINTEXT listener (readiness probes, `stream kafka
    status`, test tooling) stays open and unauthenticated, and no authorizer runs.

    >>> BrokerSecurity(users={"scorer": "s3cret"}).protocols()
    ('SASL_PLAINTEXT',)
    >>> BrokerSecurity(Path("b.pem"), Path("b.key"), {"scorer": "s3cret"}).protocols()
    ('SSL', 'SASL_PLAINTEXT', 'SASL_SSL')
    """

    certfile: Path | None = None
    keyfile: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("an SSL listener needs both certfile and keyfile")
        for word in (*self.users, *self.users.values()):
            if not _PLAIN_WORD.fullmatch(word):
                raise ConfigError("SASL user names and passwords of the local broker may only "
                                  "hold letters, digits and ._~!@#$%^&*+-")

    def protocols(self) -> tuple[str, ...]:
        tls, sasl = self.certfile is not None, bool(self.users)
        wanted = {"SSL": tls, "SASL_PLAINTEXT": sasl, "SASL_SSL": tls and sasl}
        return tuple(p for p in SECURE_PROTOCOLS if wanted[p])

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that create every user's SCRAM credentials."""
        return [arg for name, password in sorted(self.users.items())
                for mechanism in SASL_MECHANISMS if mechanism.startswith("SCRAM")
                for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]

    def properties(self, ports: Mapping[str, int], keystore: Path | None) -> dict[str, str]:
        """The template's secure_* values for listeners on `ports` (protocol -> port)."""
        protocols = self.protocols()
        lines: list[str] = []
        if keystore is not None:
            lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}"]
        if self.users:
            lines.append(f"sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}")
            plain_users = " ".join(f'user_{n}="{p}"' for n, p in sorted(self.users.items()))
            for protocol in protocols:
                if not protocol.startswith("SASL"):
                    continue
                prefix = f"listener.name.{protocol.lower()}"
                lines.append(f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security."
                             f"plain.PlainLoginModule required {plain_users};")
                for mechanism in SASL_MECHANISMS[1:]:
                    lines.append(f"{prefix}.{mechanism.lower()}.sasl.jaas.config=org.apache."
                                 "kafka.common.security.scram.ScramLoginModule required;")
        return {
            "secure_listeners": "".join(f",{p}://127.0.0.1:{ports[p]}" for p in protocols),
            "secure_advertised": "".join(f",{p}://127.0.0.1:{ports[p]}" for p in protocols),
            "secure_map": "".join(f",{p}:{p}" for p in protocols),
            "secure_settings": "\n".join(lines),
        }

    def users_digest(self) -> str:
        """What a formatted data dir remembers of its SCRAM users (never the passwords)."""
        text = json.dumps(sorted(self.users.items()))
        return hashlib.sha256(text.encode()).hexdigest()
