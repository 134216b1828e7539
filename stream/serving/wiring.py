"""Wiring for `stream run` and `stream demo`: settings -> clients, pipeline, loop, metrics.

Kept apart from the CLI so tests and the demo start a scorer exactly as production does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from stream.assembly import (
    challengers,
    merchant_partitions,
    model_version,
    pipeline_config,
    state_key,
)
from stream.config import Settings
from stream.contracts.topics import load_specs
from stream.core.pipeline import Pipeline
from stream.core.scoring.model import COMPILED
from stream.errors import AuthenticationError, ConfigError, FraudStreamError, InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Clients, GroupConsumer, connect
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.observability.health import Health, HealthServer
from stream.observability.lag import BrokerProbe
from stream.observability.metrics import Metrics
from stream.serving.gc_policy import HeapKeeper
from stream.serving.ledger import RunResult
from stream.serving.loop import ScorerLoop
from stream.state.snapshot import load_snapshot

log = logging.getLogger("stream.serving.wiring")


def not_connected(exc: ClientError, settings: Settings) -> FraudStreamError:
    """Why the first contact with Kafka failed, with the fix: refused credentials or an
    untrusted certificate, or no broker answering."""
    if exc.kind == "auth":
        return AuthenticationError(
            f"cannot connect to Kafka at {settings.bootstrap_servers}: {exc}; check the "
            "security settings (security_protocol, ssl_cafile, sasl_mechanism, the SASL user "
            "name and password)")
    return InfrastructureError(
        f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}); is the broker up? "
        "(`stream kafka up` starts a local one)")


def check_topics(consumer: GroupConsumer, settings: Settings) -> dict[str, int]:
    """Fail fast with the fix in the message, instead of waiting on a topic that never comes.
    Returns the partition count of every topic."""
    try:
        existing = consumer.topic_partitions(settings.bootstrap_timeout_ms / 1000.0)
    except ClientError as exc:
        raise not_connected(exc, settings) from None
    wanted = [settings.input_topic, settings.labels_topic, settings.output_topic,
              settings.dlq_topic]
    if settings.changelog:
        wanted.append(settings.changelog_topic)
    missing = [t for t in wanted if t not in existing]
    if missing:
        how = "`stream topics apply`"
        if settings.changelog_topic in missing and "changelog_topic" not in \
                settings.model_fields_set:
            # Named after the application: `topics apply` must be told the same one.
            app = settings.application_id
            how += (f" (the changelog is named after the application, {app!r}: "
                    f"`stream topics apply --application-id {app}`)")
        raise InfrastructureError(f"topic(s) missing: {', '.join(missing)}; create them with {how}")
    return existing


def ensure_merchant_feed(clients: Clients, settings: Settings, partitions: dict[str, int]) -> None:
    """Create the application's merchant feed and its images topic when they are missing, as
    Kafka Streams creates its internal topics (the feed with one partition per input
    partition, the images with one; the config of their specs in topics/); refuse a feed
    with another partition count."""
    topic, wanted = settings.merchant_feed_topic, partitions[settings.input_topic]
    found = partitions.get(topic)
    if found is None:
        _create_internal(clients, settings, partitions, topic, "transactions.merchant-feed",
                         wanted)
    elif found != wanted:
        raise ConfigError(
            f"{topic} has {found} partitions but {settings.input_topic} has {wanted}: the "
            "merchant feed is partitioned like the input; delete it (the scorer recreates "
            "it and rebuilds the merchant table from what the others publish) or recreate it "
            f"with {wanted} partitions")
    images = settings.merchant_images_topic
    if settings.merchant_image_interval_s > 0 and images not in partitions:
        _create_internal(clients, settings, partitions, images, "transactions.merchant-images",
                         1)


def _create_internal(clients: Clients, settings: Settings, partitions: dict[str, int],
                     topic: str, role: str, count: int) -> None:
    spec = load_specs(settings.topics_dir).get(role)
    config = dict(spec.config) if spec is not None else {}
    replicas = spec.replication_factor if spec is not None else 1
    admin = clients.admin()
    try:
        error = admin.create_topics({topic: (count, replicas, config)}).get(topic)
    except ClientError as exc:
        raise InfrastructureError(f"cannot create {topic}: {exc}") from None
    finally:
        admin.close()
    if error is not None and error != "already exists":
        raise InfrastructureError(
            f"cannot create {topic}: {error}; create it with `stream topics apply "
            f"--application-id {settings.application_id}` (or give the scorer the right "
            "to create its internal topics)")
    log.info("created %s (%d partitions)", topic, count)
    partitions[topic] = count


@dataclass
class Scorer:
    """A built scorer: the loop plus what must be closed after it."""

    loop: ScorerLoop
    consumer: GroupConsumer
    delivery: AtLeastOnce | ExactlyOnce
    metrics: Metrics
    health: Health

    def close(self) -> None:
        with suppress(Exception):
            self.delivery.close()
        with suppress(Exception):
            self.consumer.close()


def transactional_id(settings: Settings) -> str:
    """Stable for the life of the process, unique per instance.

    Zombie instances are fenced by the consumer-group metadata sent with the offsets
    (KIP-447), so the id need not survive restarts; it only has to differ between live
    instances, or they would fence each other.
    """
    if settings.transactional_id:
        return settings.transactional_id
    return f"{settings.group_id}-{socket.gethostname()}-{os.getpid()}"


def make_delivery(settings: Settings, clients: Clients,
                  consumer: GroupConsumer) -> AtLeastOnce | ExactlyOnce:
    timeout_s = settings.request_timeout_ms / 1000.0
    if settings.guarantee == "exactly-once":
        tid = transactional_id(settings)
        return ExactlyOnce(lambda: clients.producer(tid), consumer, timeout_s)
    return AtLeastOnce(lambda: clients.producer(), consumer, timeout_s)


def build_scorer(
    settings: Settings, registry: CollectorRegistry | None = None, health: Health | None = None
) -> Scorer:
    """Connect, check topics, and assemble the loop; raises InfrastructureError with a fix."""
    metrics = Metrics(registry if registry is not None else REGISTRY)
    clients = connect(settings)
    try:
        consumer = clients.group_consumer()  # kafka-python connects here already
    except ClientError as exc:
        raise not_connected(exc, settings) from None
    try:
        partitions = check_topics(consumer, settings)
        delivery = make_delivery(settings, clients, consumer)
    except Exception:
        consumer.close()
        raise
    try:
        # Only state that is read or written needs the key (none: no changelog, no snapshot).
        key = state_key(settings) if settings.changelog or settings.init_from else None
        init = load_snapshot(settings.init_from, key) if settings.init_from is not None \
            else None
    except Exception:
        consumer.close()
        raise
    version = init.model_name if init is not None and init.model_name else \
        model_version(settings)
    if version in challengers(settings):
        consumer.close()
        raise ConfigError(f"challenger {version!r} is the champion the scorer starts from")
    shared = settings.merchant_state == "shared"
    if shared:
        ensure_merchant_feed(clients, settings, partitions)
    pipeline = Pipeline(pipeline_config(settings, key), version, init_from=init,
                        merchant_partitions=merchant_partitions(
                            settings, partitions[settings.input_topic]),
                        merchant_feed=shared)
    if not COMPILED:
        log.warning("the model's loops run in Python: stream.core.scoring._steps was not built "
                    "(no C compiler or Python headers at install); the same scores at more CPU "
                    "per event (README 'Benchmark')")
    if settings.changelog:
        log.info("application %r (group %r): state in %s%s", settings.application_id,
                 settings.group_id, settings.changelog_topic,
                 f", adopting application {settings.adopt_state_from!r}'s (adopt_state_from)"
                 if settings.adopt_state_from else "")
    health = health if health is not None else Health(stuck_after_s=settings.stuck_after_s)
    loop = ScorerLoop(settings, pipeline, metrics, clients, consumer, delivery, health,
                      topic_partitions=partitions)
    return Scorer(loop, consumer, delivery, metrics, health)


def serve_metrics(
    settings: Settings, health: Health, registry: CollectorRegistry | None = None
) -> HealthServer | None:
    """Serve /metrics, /healthz and /readyz when a port is configured."""
    if settings.metrics_port is None:
        return None
    try:
        server = HealthServer(registry if registry is not None else REGISTRY, health,
                              settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise InfrastructureError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    return server


@contextmanager
def stop_on_signals(loop: ScorerLoop) -> Iterator[None]:
    """SIGTERM/SIGINT finish the batch in hand and commit, instead of dying mid-batch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal %d received: finishing the current batch", signum)
        loop.stop()

    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_scorer(settings: Settings, registry: CollectorRegistry | None = None,
               heap: HeapKeeper | None = None) -> RunResult:
    """`stream run`: score until stopped or until --max-events records are done; `heap`,
    when given, keeps the process's garbage collector off the scorer's state."""
    # The health server comes first so an orchestrator can probe while we connect.
    health = Health(stuck_after_s=settings.stuck_after_s)
    server = serve_metrics(settings, health, registry)
    try:
        scorer = build_scorer(settings, registry, health)
    except Exception:
        if server is not None:
            server.shutdown()
        raise
    probe = BrokerProbe(scorer.metrics, settings.bootstrap_servers, health=health).start()
    scorer.loop.probe = probe
    scorer.loop.heap = heap
    try:
        with stop_on_signals(scorer.loop):
            return scorer.loop.run()
    finally:
        probe.stop()
        scorer.close()
        if server is not None:
            server.shutdown()
