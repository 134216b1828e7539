"""The librdkafka adapter (confluent-kafka): settings, error classification, admin, factory.

Why librdkafka is the default: the scorer's throughput and latency are set by per-record
client work. Measured on the 2-core machine (docs/benchmark.md): kafka-python costs ~25 us of
Python per produced record and ~15 us per consumed one, under the same GIL as the model;
librdkafka builds, checksums, batches and fetches in its own threads, and a passthrough runs
at ~80,000 events/s against ~22,000 with kafka-python.

The settings that matter for correctness live in the client configs, next to the reason for
each: manual commits of explicit offsets (offsets move only for finished work), read_committed
(never act on an aborted transaction), acks=all + idempotence (a verdict is durable once
acknowledged), the range assignor (partition N of `transactions` and `labels` land on the
same instance, since both are keyed by card_id: co-partitioning as in Kafka Streams), and
the murmur2 partitioner (librdkafka's default hashes keys with CRC32; Java, kafka-python and
`stream.contracts.partitioning` use murmur2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from stream.config import Settings
from stream.kafka.classify import ClientError, FailureWatch, Kind
from stream.kafka.records import Source
from stream.kafka.redact import reveal

log = logging.getLogger("stream.kafka")
_client_log = logging.getLogger("rdkafka")

_KINDS: dict[int, Kind] = {
    KafkaError._FENCED: "fenced", KafkaError.PRODUCER_FENCED: "fenced",
    KafkaError.INVALID_PRODUCER_EPOCH: "fenced",
    # Our group generation is gone: the work since the last checkpoint belongs to the owner.
    KafkaError.ILLEGAL_GENERATION: "group_moved", KafkaError.UNKNOWN_MEMBER_ID: "group_moved",
    KafkaError.REBALANCE_IN_PROGRESS: "group_moved", KafkaError.FENCED_INSTANCE_ID: "group_moved",
    KafkaError._STATE: "group_moved",  # an operation on a partition we no longer own
    KafkaError._TIMED_OUT: "timed_out", KafkaError.REQUEST_TIMED_OUT: "timed_out",
    KafkaError._TIMED_OUT_QUEUE: "timed_out",
    KafkaError._CONFLICT: "in_progress",  # a timed-out commit_transaction still running
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large", KafkaError.RECORD_LIST_TOO_LARGE: "too_large",
    KafkaError._QUEUE_FULL: "queue_full",
    KafkaError._AUTHENTICATION: "auth", KafkaError.SASL_AUTHENTICATION_FAILED: "auth",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "auth", KafkaError.GROUP_AUTHORIZATION_FAILED: "auth",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "auth",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "auth",
}


def client_error(error: KafkaError | KafkaException | BaseException) -> ClientError:
    """A librdkafka error (or exception carrying one) as a ClientError.

    >>> e = client_error(KafkaError(KafkaError._CONFLICT))
    >>> e.kind, e.fatal
    ('in_progress', False)
    """
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0],
                                                                       KafkaError):
        error = error.args[0]
    if not isinstance(error, KafkaError):
        return ClientError(str(error))
    code = error.code()
    return ClientError(str(error.str() or error), kind=_KINDS.get(code, "other"),
                       retriable=bool(error.retriable()), fatal=bool(error.fatal()), code=code)


def _tp(source: Source, offset: int | None = None) -> TopicPartition:
    if offset is None:
        return TopicPartition(source[0], source[1])
    return TopicPartition(source[0], source[1], offset)


def connection_config(settings: Settings, watch: FailureWatch | None = None) -> dict[str, Any]:
    """The librdkafka names of the connection settings every client shares (the one
    translation of Settings for this client); `watch` hears the client's refused logins and
    failed TLS handshakes (FailureWatch), which librdkafka reports only to its error callback.

    >>> from stream.config import load_settings
    >>> c = connection_config(load_settings(environ={}, request_timeout_ms=5000))
    >>> c["bootstrap.servers"], c["socket.timeout.ms"], c["request.timeout.ms"]
    ('localhost:9092', 5000, 5000)
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "client.id": settings.client_id,
        # kafka-python's request_timeout_ms bounds one request; librdkafka splits it into the
        # network (socket) timeout and the producer's acknowledgement timeout.
        "socket.timeout.ms": settings.request_timeout_ms,
        "request.timeout.ms": settings.request_timeout_ms,
        "logger": _client_log,
        # librdkafka reconnects by itself; its per-attempt warnings during an outage would
        # flood the log (the loop and /metrics report outages once).
        "log_level": 3,
        "error_cb": _error_callback(watch if watch is not None else FailureWatch()),
    }
    optional = {
        "sasl.mechanism": settings.sasl_mechanism,
        "sasl.username": settings.sasl_plain_username,
        "ssl.ca.location": settings.ssl_cafile,
        "ssl.certificate.location": settings.ssl_certfile,
        "ssl.key.location": settings.ssl_keyfile,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    if settings.sasl_plain_password is not None:
        config["sasl.password"] = reveal(settings.sasl_plain_password)
    return config


_AUTH_FAILED = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)


def _error_callback(watch: FailureWatch) -> Any:
    """Client-wide errors (a broker down, a failed connection) are retried by librdkafka;
    the loop notices real trouble on commit and the broker probe reports outages. A refused
    login or a failed TLS handshake is kept in `watch`, to explain the timeout that follows."""
    def on_error(error: KafkaError) -> None:
        log.debug("kafka client: %s", error)
        if error.code() in _AUTH_FAILED:
            watch.saw_auth_failure(error.str())
        elif error.code() == KafkaError._SSL:
            watch.saw_tls_failure(error.str())
    return on_error


def explained(error: ClientError, watch: FailureWatch, serve: Any = None) -> ClientError:
    """`error`, explained by what the client's error callback heard (FailureWatch.explain).
    librdkafka runs that callback only inside poll: `serve()` runs one (poll(0)) first, where
    that is safe (an admin client, a producer, a consumer with nothing assigned)."""
    if error.kind in ("timed_out", "other") and serve is not None:
        try:
            serve()
        except Exception:  # noqa: BLE001 - only to hear the callbacks; the error stands
            pass
    return watch.explain(error)


def _without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A config for a client type that rejects some shared keys (admin: no request.timeout)."""
    return {k: v for k, v in config.items() if k not in keys}


class RdkafkaAdmin:
    """Topic management through librdkafka's AdminClient."""

    def __init__(self, settings: Settings) -> None:
        self._timeout_s = settings.bootstrap_timeout_ms / 1000.0
        self._watch = FailureWatch()
        self._client = AdminClient(_without(connection_config(settings, self._watch),
                                            "request.timeout.ms"))

    def _failed(self, exc: KafkaException) -> ClientError:
        return explained(client_error(exc), self._watch, lambda: self._client.poll(0))

    def topics(self) -> dict[str, int]:
        try:
            metadata = self._client.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise self._failed(exc) from None
        return {name: len(t.partitions) for name, t in metadata.topics.items()
                if t.error is None}

    def create_topics(self, topics: Mapping[str, tuple[int, int, Mapping[str, str]]]
                      ) -> dict[str, str | None]:
        if not topics:
            return {}
        futures = self._client.create_topics(
            [NewTopic(name, num_partitions=parts, replication_factor=rf, config=dict(config))
             for name, (parts, rf, config) in topics.items()],
            operation_timeout=self._timeout_s, request_timeout=self._timeout_s)
        out: dict[str, str | None] = {}
        for name, future in futures.items():
            try:
                future.result()
                out[name] = None
            except KafkaException as exc:
                error = client_error(exc)
                exists = error.code == KafkaError.TOPIC_ALREADY_EXISTS
                out[name] = "already exists" if exists else str(error)
        return out

    def topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        futures = self._client.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names],
            request_timeout=self._timeout_s)
        out: dict[str, dict[str, str]] = {}
        for resource, future in futures.items():
            try:
                entries = future.result()
            except KafkaException as exc:
                error = client_error(exc)
                if error.code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # a missing topic is left out
                raise self._failed(exc) from None
            out[resource.name] = {k: v.value for k, v in entries.items() if v.value is not None}
        return out

    def replication_factors(self, names: list[str]) -> dict[str, int]:
        try:
            metadata = self._client.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise self._failed(exc) from None
        return {name: max((len(p.replicas) for p in t.partitions.values()), default=0)
                for name, t in metadata.topics.items() if name in names and t.error is None}

    def delete_topics(self, names: list[str]) -> None:
        if not names:
            return
        for future in self._client.delete_topics(names, operation_timeout=self._timeout_s
                                                 ).values():
            try:
                future.result()
            except KafkaException as exc:
                log.debug("delete topic: %s", exc)

    def close(self) -> None:
        """AdminClient needs no close; kept for the protocol."""


class RdkafkaClients:
    """Every client, configured from one Settings (see stream.kafka.clients)."""

    name = "librdkafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def group_consumer(self) -> Any:
        from stream.kafka.rdkafka_consumer import RdkafkaGroupConsumer

        return RdkafkaGroupConsumer(self.settings)

    def producer(self, transactional_id: str | None = None, linger_ms: float = 2.0,
                 max_queued: int = 100_000) -> Any:
        from stream.kafka.rdkafka_producer import RdkafkaProducer

        return RdkafkaProducer(self.settings, transactional_id, linger_ms, max_queued)

    def reader(self, bulk: bool = False) -> Any:
        from stream.kafka.rdkafka_consumer import RdkafkaReader

        return RdkafkaReader(self.settings, bulk)

    def admin(self) -> RdkafkaAdmin:
        return RdkafkaAdmin(self.settings)

    def committed(self, sources: list[Source], timeout_s: float) -> dict[Source, int | None]:
        """From a consumer of the group that never joins it (OffsetFetch from a fresh
        coordinator lookup): after a broker restart, the loop's own consumer can keep timing
        out on a coordinator it cached (confluentinc/librdkafka#5511)."""
        watch = FailureWatch()
        consumer = Consumer({
            **connection_config(self.settings, watch), "group.id": self.settings.group_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
        })
        try:
            found = consumer.committed([_tp(s) for s in sources], timeout=timeout_s)
        except KafkaException as exc:
            raise explained(client_error(exc), watch, lambda: consumer.poll(0)) from None
        finally:
            consumer.close()
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in found}
