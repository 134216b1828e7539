"""TEMPORARY (being replaced by the kafka-python adapter, stream/kafka/kafkapython.py):
kafka-python clients for admin, `stream produce`, the batch modes and the benchmark.

The settings that matter for correctness live here, next to the reason for each:
manual commits (offsets move only for finished work), read_committed (never act on an
aborted transaction), acks=all + idempotence (a verdict is durable once acknowledged), and
the range assignor (partition N of `transactions` and `labels` land on the same instance,
since both are keyed by card_id: co-partitioning as in Kafka Streams).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError, KafkaTimeoutError

from stream.config import Settings
from stream.errors import InfrastructureError


def _connect(what: str, settings: Settings, build: Any) -> Any:
    try:
        return build()
    except KafkaTimeoutError:
        raise InfrastructureError(
            f"cannot reach Kafka at {settings.bootstrap_servers} ({what}); is the broker up? "
            "(`stream kafka up` starts a local one)"
        ) from None
    except KafkaError as exc:
        raise InfrastructureError(f"Kafka error while creating the {what}: {exc}") from None


def make_consumer(settings: Settings, *, group_id: str | None = None, **overrides: Any) -> Any:
    """A group consumer with manual commits; subscribe after creation."""
    options: dict[str, Any] = {
        **settings.kafka_options(),
        "group_id": group_id if group_id is not None else settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": settings.max_poll_records,
        # A killed instance's partitions move after this long, not after 45 s.
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "partition_assignment_strategy": (RangePartitionAssignor,),
        "fetch_max_wait_ms": 100,
        "metrics_enabled": False,
    }
    options.update(overrides)
    return _connect("consumer", settings, lambda: KafkaConsumer(**options))


def make_producer(settings: Settings, **overrides: Any) -> Any:
    """A durable producer: every verdict is on all in-sync replicas before we commit."""
    options: dict[str, Any] = {
        **settings.kafka_options(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
        "metrics_enabled": False,
    }
    options.update(overrides)
    return _connect("producer", settings, lambda: KafkaProducer(**options))


def make_admin(settings: Settings) -> Any:
    """An admin client for topic management and start-up checks."""
    options = {**settings.kafka_options()}
    return _connect("admin client", settings, lambda: KafkaAdminClient(**options))
