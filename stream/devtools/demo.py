"""`stream demo`: everything at once on one machine, with a live terminal summary.

Starts the local broker when nothing answers at the configured address, applies the
topics (under the configured names; the state changelog is the application's own,
`<application_id>.changelog`, as for `stream run`), runs the synthetic producer in a thread
and the scorer in another, and renders a summary (demo_screen.py) from the same Prometheus
registry the /metrics endpoint serves, so the terminal and Grafana can never disagree. Log
lines scroll above the summary, which stays put (demo_screen.py says why).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from rich.console import Console
from rich.live import Live

from stream.config import Settings
from stream.contracts.topics import specs_for
from stream.devtools.broker import LocalBroker, is_answering
from stream.devtools.demo_screen import LogRelay, RunView, logs_above, summary, value
from stream.devtools.producer import produce_events
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.admin import apply_topics
from stream.kafka.classify import ClientError
from stream.kafka.clients import connect
from stream.serving.wiring import build_scorer, serve_metrics

log = logging.getLogger("stream.devtools.demo")
REFRESH_S = 1.0  # the summary's redraws
TICK_S = 0.1  # while the summary is up, lines logged on other threads show within this


def ensure_broker(settings: Settings, port: int, console: Console) -> LocalBroker | None:
    """Start a local broker only when nothing answers; returns it so the demo can stop it."""
    if is_answering(settings.bootstrap_servers, timeout_s=3.0):
        return None
    console.print(f"no broker at {settings.bootstrap_servers}: starting a local one on {port}")
    broker = LocalBroker(port=port)
    broker.start()
    return broker


def apply_demo_topics(settings: Settings, console: Console) -> None:
    """Create the topics under the names the settings give them (as `stream topics apply`)."""
    admin = connect(settings).admin()
    try:
        report = apply_topics(admin, specs_for(settings.topic_names(), settings.topics_dir))
    finally:
        admin.close()
    for line in report.lines():
        console.print(line, highlight=False)


def records_waiting(settings: Settings, patience_s: float = 15.0) -> int | None:
    """Input records the scorer's group has not processed yet: what earlier runs left behind.

    The scorer starts from the group's committed offsets (the first offset when there are
    none), so it scores these too and its count includes them; measured before this run
    produces anything. A broker that has just started answers "not coordinator" for a while,
    so failures are retried for `patience_s`; None when it still cannot be measured (the
    summary then says the count may include them).
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return _waiting(settings)
        except ClientError as exc:
            if exc.kind in ("auth", "fenced") or time.monotonic() >= deadline:
                log.warning("cannot tell how many records earlier runs left: %s", exc)
                return None
            time.sleep(0.5)


def _waiting(settings: Settings) -> int:
    clients = connect(settings)
    timeout_s = settings.request_timeout_ms / 1000.0
    reader = clients.reader()
    try:
        sources = [(settings.input_topic, p) for p in reader.partitions(settings.input_topic)]
        marks = {source: reader.watermarks(source, timeout_s) for source in sources}
    finally:
        reader.close()
    committed = clients.committed(sources, timeout_s)
    return sum(max(0, end - max(first, committed.get(source) or 0))
               for source, (first, end) in marks.items())


def run_demo(
    settings: Settings, *, count: int, rate: float, fraud_rate: float, broker_port: int,
    seconds: float | None, registry: CollectorRegistry | None = None,
) -> None:
    """Run the demo until everything produced is processed, `seconds` pass, or Ctrl-C."""
    console = Console()
    with logs_above(console) as relay:
        _run(settings, console, relay, registry if registry is not None else REGISTRY,
             count=count, rate=rate, fraud_rate=fraud_rate, broker_port=broker_port,
             seconds=seconds)


def _run(
    settings: Settings, console: Console, relay: LogRelay, registry: CollectorRegistry, *,
    count: int, rate: float, fraud_rate: float, broker_port: int, seconds: float | None,
) -> None:
    """This thread alone writes to the terminal: it prints what the others logged
    (`relay.drain`) and redraws the summary (demo_screen's module docstring)."""
    if not is_answering(settings.bootstrap_servers, timeout_s=3.0):
        settings = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{broker_port}"})
    broker = ensure_broker(settings, broker_port, console)
    relay.drain()
    try:
        apply_demo_topics(settings, console)
        earlier = records_waiting(settings)
        scorer = build_scorer(settings, registry)
        server = serve_metrics(settings, scorer.health, registry)
        url = None if server is None else f"localhost:{server.port}/metrics"
        relay.drain()
        produced = _start_producer(settings, count, rate, fraud_rate)
        scorer_thread = threading.Thread(target=scorer.loop.run, name="scorer", daemon=True)
        started = last_at = time.monotonic()
        last_scored = 0.0

        def view(per_second: float, done: bool = False) -> RunView:
            return RunView(produced["n"], count, earlier, per_second,
                           time.monotonic() - started, scorer.loop.pipeline.model_version,
                           settings.metrics_window, url, done)

        with Live(summary(registry, view(0.0)), console=console, auto_refresh=False,
                  vertical_overflow="ellipsis") as live:
            scorer_thread.start()
            try:
                next_update = started + REFRESH_S
                while scorer_thread.is_alive():
                    time.sleep(TICK_S)
                    relay.drain()
                    now = time.monotonic()
                    if now < next_update:
                        continue
                    next_update = now + REFRESH_S
                    scored = value(registry, "fraudstream_events_total", outcome="scored")
                    per_second = (scored - last_scored) / max(1e-9, now - last_at)
                    last_at, last_scored = now, scored
                    live.update(summary(registry, view(per_second)), refresh=True)
                    processed = scored + value(registry, "fraudstream_events_total",
                                               outcome="dead_lettered")
                    finished = produced["done"] and processed >= produced["n"] + (earlier or 0)
                    if finished or (seconds is not None and now - started >= seconds):
                        break
            except KeyboardInterrupt:
                log.info("stopping...")
            finally:  # inside Live: shutdown log lines still scroll above the summary
                scorer.loop.stop()
                _join(scorer_thread, relay, timeout_s=30.0)
                scorer.close()
                if server is not None:
                    server.shutdown()
                relay.drain()
                live.update(summary(registry, view(0.0, done=True)), refresh=True)
    finally:
        relay.drain()
        if broker is not None:
            console.print("stopping the local broker")
            broker.stop()


def _join(thread: threading.Thread, relay: LogRelay, timeout_s: float) -> None:
    """Wait for `thread`, printing what it logs meanwhile (its shutdown lines)."""
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(TICK_S)
        relay.drain()


def _start_producer(settings: Settings, count: int, rate: float,
                    fraud_rate: float) -> dict[str, Any]:
    """Produce `count` synthetic transactions in a thread; the returned dict counts them."""
    produced: dict[str, Any] = {"n": 0, "done": False}

    def _produce() -> None:
        producer = connect(settings).producer(linger_ms=20.0)
        try:
            events = generate(TrafficConfig(count=count, fraud_rate=fraud_rate, seed=7))

            def _counted() -> Any:
                for event in events:
                    produced["n"] += 1
                    yield event

            produce_events(producer, _counted(), settings.input_topic, rate=rate, progress=False)
        finally:
            producer.close(10.0)
            produced["done"] = True

    threading.Thread(target=_produce, name="demo-producer", daemon=True).start()
    return produced
