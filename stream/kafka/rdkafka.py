"""The serving path's Kafka clients: confluent-kafka (librdkafka), built the one way we use them.

Why a C client here and kafka-python elsewhere: the scorer's throughput and latency are set
by per-record client work. Measured on the 2-core machine (docs/benchmark.md): kafka-python
costs ~25 us of Python per produced record and ~15 us per consumed one, under the same GIL as
the model, and its passthrough ceiling is ~22,000 events/s; librdkafka builds, checksums,
batches and fetches in its own threads, and the same passthrough runs at ~80,000 events/s
(with commits and delivery checks; ~6 us of Python per event). Admin, the offline tools and
the benchmark's pre-fill keep kafka-python (`kafka_io`), where per-record cost does not
matter.

The settings that matter for correctness live here, next to the reason for each: manual
commits of explicit offsets (offsets move only for finished work), read_committed (never act
on an aborted transaction), acks=all + idempotence (a verdict is durable once acknowledged),
and the range assignor (partition N of `transactions` and `labels` land on the same
instance, since both are keyed by card_id: co-partitioning as in Kafka Streams).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from stream.config import Settings
from stream.errors import InfrastructureError

log = logging.getLogger("stream.kafka")
_client_log = logging.getLogger("rdkafka")

# librdkafka error codes that mean "our group generation is gone": the work since the last
# checkpoint belongs to whoever owns the partitions now.
GROUP_MOVED = frozenset({
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID,
    KafkaError._STATE,  # an operation on a partition we no longer own
})
# ... and codes that mean another producer owns our transactional id.
FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                    KafkaError.INVALID_PRODUCER_EPOCH})


def connection_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka names of the connection settings every client shares."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "client.id": settings.client_id,
        "socket.timeout.ms": settings.request_timeout_ms,
        "logger": _client_log,
        # librdkafka reconnects by itself; its per-attempt warnings during an outage would
        # flood the log (the loop and /metrics report outages once).
        "log_level": 3,
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
        config["sasl.password"] = settings.sasl_plain_password.get_secret_value()
    return config


def _error_cb(error: KafkaError) -> None:
    """Client-wide errors (a broker down, a failed connection) are retried by librdkafka;
    the loop notices real trouble on commit and the broker probe reports outages."""
    log.debug("kafka client: %s", error)


def _commit_cb(error: KafkaError | None, partitions: list[Any]) -> None:
    """Result of an asynchronous offset commit (at-least-once checkpoints). A failure loses
    nothing: the next checkpoint commits later offsets, and a rebalance commits synchronously."""
    if error is not None:
        log.warning("offset commit failed: %s", error)


def make_group_consumer(settings: Settings, **overrides: Any) -> Consumer:
    """The scorer's group consumer: explicit commits only; subscribe after creation."""
    config = {
        **connection_config(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # End-of-partition events tell the event-time alignment that a partition is caught
        # up, so it stops waiting for it (stream/serving/intake.py).
        "enable.partition.eof": True,
        # A killed instance's partitions move after this long, not after 45 s.
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "partition.assignment.strategy": "range",
        # Return a fetch as soon as one record is there (fetch.min.bytes = 1): latency.
        "fetch.wait.max.ms": 100,
        # Prefetch bound: what is queued locally is re-fetched after a rewind anyway.
        "queued.max.messages.kbytes": 16 * 1024,
        "error_cb": _error_cb,
        "on_commit": _commit_cb,
    }
    config.update(overrides)
    return Consumer(config)


def make_restore_consumer(settings: Settings) -> Consumer:
    """A consumer that only reads changelog partitions end to end (assign, never commits):
    big fetches, and an end-of-partition event so a restore knows when it is done."""
    return Consumer({
        **connection_config(settings),
        "group.id": f"{settings.group_id}-restore",  # required by the client; never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 20,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "error_cb": _error_cb,
    })


def make_offsets_reader(settings: Settings) -> Consumer:
    """A consumer of the scorer's group that never joins it: it only reads the committed
    offsets (OffsetFetch), from a fresh coordinator lookup."""
    return Consumer({
        **connection_config(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "error_cb": _error_cb,
    })


def make_fast_producer(settings: Settings, transactional_id: str | None = None,
                       **overrides: Any) -> Producer:
    """A durable producer: every verdict is on all in-sync replicas before we commit."""
    config: dict[str, Any] = {
        **connection_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        # Batches leave after 2 ms: latency; at full load batches fill before that anyway.
        "linger.ms": 2,
        "error_cb": _error_cb,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = max(60_000, settings.request_timeout_ms * 2)
    config.update(overrides)
    return Producer(config)


def next_batch(consumer: Consumer, most: int, timeout_s: float) -> list[Any]:
    """Whatever is already fetched (up to `most`), waiting up to `timeout_s` only when
    nothing is. consume(n, t) alone would wait for n records or the whole timeout: at
    2,000 events/s that is 100 ms added to every verdict."""
    batch: list[Any] = consumer.consume(most, 0)
    if batch:
        return batch
    first = consumer.poll(timeout_s)
    if first is None:
        return batch
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def topic_metadata(consumer: Consumer, settings: Settings,
                   timeout_s: float | None = None) -> dict[str, int]:
    """Partition count per topic, or InfrastructureError naming the broker we could not reach."""
    timeout = timeout_s if timeout_s is not None else settings.bootstrap_timeout_ms / 1000.0
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise InfrastructureError(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({error_of(exc)}); is the "
            "broker up? (`stream kafka up` starts a local one)"
        ) from None
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()
            if topic.error is None}


def error_of(exc: BaseException) -> KafkaError | None:
    """The KafkaError inside a KafkaException (None for anything else)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def error_code(exc: BaseException) -> int | None:
    error = error_of(exc)
    return None if error is None else error.code()
