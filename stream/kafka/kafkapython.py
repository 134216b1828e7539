"""The kafka-python adapter: every client of stream.kafka.clients, with kafka-python 3.

Why a pure-Python client at all: it installs anywhere Python does (no librdkafka wheel or
build), its behaviour can be read and stepped through, and it is the reference the
librdkafka adapter is checked against (tests/integration/test_kafka_adapters.py runs the same
contract on both). It costs more Python per record under the GIL (docs/benchmark.md), which
is why librdkafka is the default.

This module holds the one translation of Settings into kafka-python options and the options
of each client kind, next to the reason for each: explicit commits only (offsets move only for
finished work), read_committed (never act on an aborted transaction), acks=all + idempotence
(a record counts once it is on every in-sync replica), the range assignor (partition N of
`transactions` and `labels` land on the same instance: co-partitioning by card_id), and
kafka-python's default partitioner, murmur2 as in the Java client and
`stream.contracts.partitioning`. The clients live in kafkapython_consumer (and its
rebalance bridge), kafkapython_reader, kafkapython_producer and kafkapython_admin; errors are
mapped in kafkapython_errors.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import TopicPartition
from kafka import errors as kerr
from kafka.coordinator.assignors.range import RangePartitionAssignor

from stream.config import READER_FETCH_WAIT_MS, Settings
from stream.kafka.kafkapython_admin import KafkaPythonAdmin
from stream.kafka.kafkapython_consumer import KafkaPythonGroupConsumer, new_consumer
from stream.kafka.kafkapython_errors import client_error
from stream.kafka.kafkapython_producer import KafkaPythonProducer
from stream.kafka.kafkapython_reader import KafkaPythonReader
from stream.kafka.kafkapython_transport import install as install_transport_fix
from stream.kafka.records import Source
from stream.kafka.redact import reveal

# kafka-python drops a broker's last answer when its close comes with it.
install_transport_fix()


class Redacted(str):
    """A secret kafka-python needs as a str, shown masked: KafkaAdminClient logs its whole
    configuration at DEBUG ("Starting KafkaAdminClient with configuration: ..."). The lines
    that show the secret otherwise (the SASL/PLAIN request dump) are masked by
    stream.kafka.redact, which `reveal` registers the secret with."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__


def connection_options(settings: Settings) -> dict[str, Any]:
    """The kafka-python names of the connection and security settings every client shares.

    >>> from pydantic import SecretStr
    >>> from stream.config import load_settings
    >>> s = load_settings(environ={}, bootstrap_servers="b1:9092,b2:9092",
    ...                   security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                   sasl_plain_username="scorer", sasl_plain_password=SecretStr("pw"),
    ...                   ssl_cafile="/etc/ca.pem", request_timeout_ms=5000)
    >>> o = connection_options(s)
    >>> o["bootstrap_servers"], o["request_timeout_ms"], o["sasl_mechanism"], o["ssl_cafile"]
    (['b1:9092', 'b2:9092'], 5000, 'SCRAM-SHA-512', '/etc/ca.pem')
    >>> o["sasl_plain_password"] == "pw", "pw" in repr(o) or "pw" in repr(s)
    (True, False)
    """
    options: dict[str, Any] = {
        "bootstrap_servers": [b.strip() for b in settings.bootstrap_servers.split(",")],
        "security_protocol": settings.security_protocol,
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        # kafka-python connects in the constructor: how long before it gives up.
        "bootstrap_timeout_ms": settings.bootstrap_timeout_ms,
        "metrics_enabled": False,  # our metrics are ours (observability/); theirs cost CPU
    }
    optional = {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_plain_username,
        "ssl_cafile": settings.ssl_cafile,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
    }
    options.update({k: v for k, v in optional.items() if v is not None})
    if settings.sasl_plain_password is not None:
        options["sasl_plain_password"] = Redacted(reveal(settings.sasl_plain_password))
    return options


def group_consumer_options(settings: Settings) -> dict[str, Any]:
    """The scorer's group member: explicit commits only; subscribe after creation."""
    return {
        **connection_options(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        # A killed instance's partitions move after this long, not after 45 s.
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "partition_assignment_strategy": (RangePartitionAssignor,),
        # A fetch waits for this many bytes or this long (`Settings.group_fetch`: by default
        # one byte, 100 ms, for every fetch response costs Python time here).
        "fetch_min_bytes": settings.group_fetch[0],
        "fetch_max_wait_ms": settings.group_fetch[1],
        # As librdkafka: subscribing never creates a topic (`stream topics apply` does).
        "allow_auto_create_topics": False,
    }


def reader_options(settings: Settings, bulk: bool) -> dict[str, Any]:
    """A group-less reader (group_id=None: no group, no commits); `bulk` reads whole
    partitions (restores) with big fetches."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        # The end of a partition shows only in a fetch response: do not wait long for one.
        "fetch_max_wait_ms": READER_FETCH_WAIT_MS,
        "allow_auto_create_topics": False,
    }
    if bulk:
        options["fetch_max_bytes"] = 64 * 1024 * 1024
        options["max_partition_fetch_bytes"] = 16 * 1024 * 1024
    return options


def producer_options(settings: Settings, transactional_id: str | None,
                     linger_ms: float) -> dict[str, Any]:
    """A durable producer: acks=all, idempotent, murmur2 keys (kafka-python's default)."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "batch_size": 256 * 1024,
        # Short: bounds send's metadata wait and each init_transactions wait, so neither
        # outlives the caller's timeout (kafkapython_producer waits in steps of this).
        "max_block_ms": 100,
        # The largest record it sends: a larger one is refused by `send` at once
        # (MessageSizeTooLargeError, kind too_large), before it can fail a transaction.
        "max_request_size": settings.max_message_bytes,
    }
    if transactional_id is not None:
        options["transactional_id"] = transactional_id
        options["transaction_timeout_ms"] = settings.transaction_timeout_ms
    return options


class KafkaPythonClients:
    """Every client, configured from one Settings (see stream.kafka.clients)."""

    name = "kafka-python"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def group_consumer(self) -> KafkaPythonGroupConsumer:
        return KafkaPythonGroupConsumer(group_consumer_options(self.settings),
                                        timeout_s=self.settings.request_timeout_ms / 1000)

    def producer(self, transactional_id: str | None = None, linger_ms: float = 2.0,
                 max_queued: int = 100_000) -> KafkaPythonProducer:
        return KafkaPythonProducer(producer_options(self.settings, transactional_id, linger_ms),
                                   metadata_timeout_s=self.settings.bootstrap_timeout_ms / 1000,
                                   max_queued=max_queued)

    def reader(self, bulk: bool = False) -> KafkaPythonReader:
        return KafkaPythonReader(reader_options(self.settings, bulk),
                                 timeout_s=self.settings.request_timeout_ms / 1000)

    def admin(self) -> KafkaPythonAdmin:
        return KafkaPythonAdmin(connection_options(self.settings),
                                timeout_s=self.settings.bootstrap_timeout_ms / 1000)

    def committed(self, sources: list[Source], timeout_s: float) -> dict[Source, int | None]:
        """From a consumer of the group that never subscribes (OffsetFetch, after its own
        coordinator lookup). read_committed makes the fetch ask for stable offsets (KIP-447):
        offsets of a transaction still completing are waited for, not returned stale."""
        consumer = new_consumer(group_consumer_options(self.settings))
        deadline = time.monotonic() + timeout_s
        out: dict[Source, int | None] = {}
        try:
            for topic, partition in sources:
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                out[(topic, partition)] = consumer.committed(TopicPartition(topic, partition),
                                                             timeout_ms=left_ms)
        except kerr.KafkaError as exc:
            raise client_error(exc, what="committed offsets") from None
        finally:
            consumer.close(autocommit=False)
        return out
