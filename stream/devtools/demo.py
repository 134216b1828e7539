"""`stream demo`: everything at once on one machine, with a live terminal summary.

Starts the local broker when nothing answers at the configured address, applies the
topics, runs the synthetic producer in a thread and the scorer in another, and renders a
summary (events/s, verdict mix, rolling AUC, lag) from the same Prometheus registry the
/metrics endpoint serves, so the terminal and Grafana can never disagree.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream.config import Settings
from stream.contracts.topics import apply_topics, load_specs
from stream.devtools.broker import LocalBroker, is_answering
from stream.devtools.producer import produce_events
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.kp_legacy import make_admin, make_producer
from stream.serving.wiring import build_scorer, serve_metrics

log = logging.getLogger("stream.devtools.demo")


@dataclass
class _Sample:
    at: float
    scored: float


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def _sum_gauge(registry: CollectorRegistry, name: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                total += sample.value
    return total


def summary_table(registry: CollectorRegistry, eps: float, produced: int, model: str) -> Table:
    """One screen an operator can read at a glance; values come from the metrics registry."""
    scored = _value(registry, "fraudstream_events_total", outcome="scored")
    dead = _value(registry, "fraudstream_events_total", outcome="dead_lettered")
    mix = {d: _value(registry, "fraudstream_verdicts_total", decision=d)
           for d in ("approve", "review", "decline")}
    total = sum(mix.values()) or 1.0
    auc = registry.get_sample_value("fraudstream_model_roc_auc", {"model": model})
    pr_auc = registry.get_sample_value("fraudstream_model_pr_auc", {"model": model})
    alert_rate = registry.get_sample_value("fraudstream_alert_rate", {"model": model})
    label_rate = registry.get_sample_value("fraudstream_label_rate")
    lag = _sum_gauge(registry, "fraudstream_consumer_lag")
    learned = _value(registry, "fraudstream_model_updates_total")
    table = Table(title="fraud-stream demo", show_header=False, min_width=56)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("produced", f"{produced:,}")
    table.add_row("scored", f"{int(scored):,}")
    table.add_row("events/s", f"{eps:,.0f}")
    table.add_row("approve / review / decline",
                  " / ".join(f"{100 * mix[d] / total:.1f}%" for d in mix))
    table.add_row("rolling ROC AUC", "-" if auc is None else f"{auc:.3f}")
    table.add_row("rolling PR AUC", "-" if pr_auc is None else f"{pr_auc:.3f}")
    table.add_row("alert rate", "-" if alert_rate is None else f"{100 * alert_rate:.2f}%")
    table.add_row("label rate", "-" if label_rate is None else f"{100 * label_rate:.1f}%")
    table.add_row("labels learned", f"{int(learned):,}")
    table.add_row("dead letters", f"{int(dead):,}")
    table.add_row("consumer lag", f"{int(lag):,}")
    return table


def ensure_broker(settings: Settings, port: int, console: Console) -> LocalBroker | None:
    """Start a local broker only when nothing answers; returns it so the demo can stop it."""
    if is_answering(settings.bootstrap_servers, timeout_s=3.0):
        return None
    console.print(f"no broker at {settings.bootstrap_servers}: starting a local one on {port}")
    broker = LocalBroker(port=port)
    broker.start()
    return broker


def run_demo(
    settings: Settings, *, count: int, rate: float, fraud_rate: float, broker_port: int,
    seconds: float | None, registry: CollectorRegistry | None = None,
) -> None:
    console = Console(stderr=False)
    registry = registry if registry is not None else REGISTRY
    if not is_answering(settings.bootstrap_servers, timeout_s=3.0):
        settings = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{broker_port}"})
    broker = ensure_broker(settings, broker_port, console)
    admin = make_admin(settings)
    try:
        for line in apply_topics(admin, load_specs(settings.topics_dir).values()).lines():
            console.print(line)
    finally:
        admin.close()
    scorer = build_scorer(settings, registry)
    server = serve_metrics(settings, scorer.health, registry)
    produced = {"n": 0}

    def _produce() -> None:
        producer = make_producer(settings)
        try:
            events = generate(TrafficConfig(count=count, fraud_rate=fraud_rate, seed=7))

            def _counted() -> Any:
                for event in events:
                    produced["n"] += 1
                    yield event

            produce_events(producer, _counted(), settings.input_topic, rate=rate, progress=False)
        finally:
            producer.close(timeout=10)

    producer_thread = threading.Thread(target=_produce, name="demo-producer", daemon=True)
    scorer_thread = threading.Thread(target=scorer.loop.run, name="scorer", daemon=True)
    producer_thread.start()
    scorer_thread.start()
    started = time.monotonic()
    last = _Sample(started, 0.0)
    eps = 0.0
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while scorer_thread.is_alive():
                time.sleep(1.0)
                now = time.monotonic()
                scored = _value(registry, "fraudstream_events_total", outcome="scored")
                eps = (scored - last.scored) / max(1e-9, now - last.at)
                last = _Sample(now, scored)
                live.update(summary_table(registry, eps, produced["n"],
                                          scorer.loop.pipeline.model_version))
                finished = not producer_thread.is_alive() and scored >= produced["n"]
                if (seconds is not None and now - started >= seconds) or finished:
                    break
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        scorer.loop.stop()
        scorer_thread.join(timeout=30)
        scorer.close()
        if server is not None:
            server.shutdown()
        if broker is not None:
            console.print("stopping the local broker")
            broker.stop()
