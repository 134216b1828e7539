"""The `stream` command: thin wrappers that build Settings and call the library.

Every failure a user can cause (a wrong option, an unreachable broker, a missing topic, a
bad config file) ends as one `error: ...` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from stream.cli.argv import normalise_argv, shape_of
from stream.cli.batch import register as register_offline
from stream.cli.options import global_options, note_global_options, quiet_clients, settings_from
from stream.devtools.broker import LocalBroker
from stream.errors import ConfigError, FraudStreamError
from stream.kafka.clients import connect

app = typer.Typer(
    name="stream", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None, help="fraud-stream: real-time fraud scoring on Kafka.\n\nThe "
    "options below are global: they may come before or after the command.",
)
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, one node).")
topics_app = typer.Typer(no_args_is_help=True, help="Topics as code (topics/).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")

Opt = typer.Option
_global = app.callback()(global_options)  # the global options: see stream/cli/options.py


# -- kafka ----------------------------------------------------------------------------------
PortOpt = Annotated[int, Opt(help="Broker port on 127.0.0.1 (controller uses port+1).")]
DataDirOpt = Annotated[Path | None, Opt(help="Log directory (kept across restarts).")]


@kafka_app.command("up")
def kafka_up(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Start the local broker and wait until it answers."""
    bootstrap = LocalBroker(port=port, data_dir=data_dir).start()
    typer.echo(bootstrap)


@kafka_app.command("down")
def kafka_down(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Stop the local broker started by `up`."""
    stopped = LocalBroker(port=port, data_dir=data_dir).stop()
    typer.echo("stopped" if stopped else "not running")


@kafka_app.command("status")
def kafka_status(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not answer."""
    status = LocalBroker(port=port, data_dir=data_dir).status()
    typer.echo(f"pid={status.pid or '-'} answering={status.answering} {status.bootstrap}")
    if not status.answering:
        raise typer.Exit(1)


# -- topics ---------------------------------------------------------------------------------
@topics_app.command("apply")
def topics_apply(
    ctx: typer.Context,
    topics_dir: Annotated[Path | None, Opt(help="Directory of topic specs.")] = None,
) -> None:
    """Create missing topics and report drift in existing ones (idempotent)."""
    from stream.contracts.topics import specs_for
    from stream.kafka.admin import apply_topics

    settings = settings_from(ctx, topics_dir=topics_dir)
    specs = specs_for(settings.topic_names(), settings.topics_dir)
    admin = connect(settings).admin()
    try:
        report = apply_topics(admin, specs)
    finally:
        admin.close()
    for line in report.lines():
        typer.echo(line)


# -- produce --------------------------------------------------------------------------------
@app.command()
def produce(
    ctx: typer.Context,
    count: Annotated[int | None, Opt(min=0, help="Synthetic transactions to produce (default "
                                     "10,000 unless --days is given).")] = None,
    days: Annotated[float | None, Opt(min=0.0, help="Instead of --count: this many days of "
                                      "event time (the count then follows from the "
                                      "population).")] = None,
    rate: Annotated[float | None, Opt(min=0.0, help="Transactions per wall-clock second "
                                      "(default: as fast as possible).")] = None,
    fraud_rate: Annotated[float, Opt(min=0.0, max=0.99, help="Expected share of fraudulent "
                                     "transactions; the scenarios' rates are scaled to it.")]
    = 0.01,
    seed: Annotated[int, Opt(help="Random seed: the same options give the same stream.")] = 7,
    cards: Annotated[int, Opt(min=1, help="Distinct cards.")] = 2000,
    merchants: Annotated[int, Opt(min=1, help="Distinct merchants.")] = 400,
    tx_per_card_per_day: Annotated[float, Opt(min=0.001, help="Mean transactions per card "
                                              "per day.")] = 3.0,
    scenario: Annotated[str, Opt(help="Fraud scenarios: 'realistic' (breached_merchant, "
                                 "compromised_card, card_testing, stolen_card, "
                                 "transaction_only with their defaults), or a comma-separated "
                                 "list of names with overrides, e.g. "
                                 "'breached_merchant:per_day=0.4;days_max=21,card_testing' "
                                 "(README: Synthetic traffic).")] = "realistic",
    labels: Annotated[Literal["event", "topic"], Opt(help="event: the "
                               "label inside each transaction (is_fraud); topic: transactions "
                               "without it and labels on the labels topic when they become "
                               "known (fraud after a lognormal delay, median 7 days; "
                               "legitimate after 7-8 days).")] = "event",
    file: Annotated[Path | None, Opt(help="Replay a .csv or .jsonl file instead.")] = None,
    label_delay: Annotated[
        float | None, Opt(min=0.0, help="Send labels on the labels topic exactly this many "
                          "event-time seconds after their transaction (overrides the "
                          "realistic delays; implies --labels topic; works with --file).")]
    = None,
    topic: Annotated[str | None, Opt(help="Target topic (default: input topic).")] = None,
    progress: Annotated[bool, Opt(help="Show a progress bar.")] = True,
) -> None:
    """Produce synthetic transactions with realistic fraud scenarios, or replay a file.

    Records are keyed by card_id. Event time is simulated (from 2026-01-01T00:00Z) and
    independent of the wall clock.
    """
    from stream.devtools.files import read_events
    from stream.devtools.producer import produce_events, produce_stream
    from stream.devtools.synthetic import TrafficConfig, generate, generate_stream, parse_scenarios

    settings = settings_from(ctx)
    if count is not None and days is not None:
        raise ConfigError("give --count or --days, not both")
    total: int | None
    config = None
    if file is not None:
        if not file.exists():
            raise ConfigError(f"file not found: {file}")
        if labels == "topic" and label_delay is None:
            raise ConfigError("--labels topic with --file needs --label-delay (a file has no "
                              "label model)")
        events: Any = read_events(file)
        total = None
    else:
        try:
            config = TrafficConfig(
                None if days is not None else (10_000 if count is None else count),
                days=days, fraud_rate=fraud_rate, seed=seed, n_cards=cards,
                n_merchants=merchants, mean_tx_per_card_per_day=tx_per_card_per_day,
                scenarios=parse_scenarios(scenario))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        events = generate(config)
        total = config.count
    producer = connect(settings).producer(linger_ms=20.0)
    try:
        if config is not None and labels == "topic" and label_delay is None:
            stats = produce_stream(producer, generate_stream(config),
                                   topic or settings.input_topic, settings.labels_topic,
                                   rate=rate, progress=progress, total=total)
        else:
            stats = produce_events(
                producer, events, topic or settings.input_topic, rate=rate,
                labels_topic=settings.labels_topic, label_delay_s=label_delay,
                progress=progress, total=total,
            )
    finally:
        producer.close(10.0)
    typer.echo(f"produced {stats.sent} events and {stats.labels_sent} labels "
               f"in {stats.seconds:.1f}s")


# -- run ------------------------------------------------------------------------------------
@app.command()
def run(
    ctx: typer.Context,
    max_events: Annotated[int | None, Opt(min=0, help="Process N input records, commit, exit 0.")]
    = None,
    metrics_port: Annotated[int | None, Opt(min=0, max=65535, help="Prometheus port.")] = None,
    metrics_host: Annotated[str | None, Opt(help="Address the metrics port binds (default "
                                        "127.0.0.1; 0.0.0.0 in the container image).")]
    = None,
    input_topic: Annotated[str | None, Opt()] = None,
    output_topic: Annotated[str | None, Opt()] = None,
    labels_topic: Annotated[str | None, Opt()] = None,
    dlq_topic: Annotated[str | None, Opt()] = None,
    changelog_topic: Annotated[str | None, Opt()] = None,
    group_id: Annotated[str | None, Opt()] = None,
    guarantee: Annotated[str | None, Opt(help="exactly-once (default) or at-least-once.")]
    = None,
    checkpoint_interval_ms: Annotated[float | None, Opt(min=0.0, help="Checkpoint period.")]
    = None,
    checkpoint_idle_ms: Annotated[float | None, Opt(
        min=0.0, help="Checkpoint period once caught up (nothing fetched waits); default "
        "20 under exactly-once, the interval under at-least-once.")] = None,
    checkpoint_events: Annotated[int | None, Opt(min=1, help="Checkpoint every N records.")]
    = None,
    transactional_id: Annotated[str | None, Opt(help="Exactly-once producer id.")] = None,
    session_timeout_ms: Annotated[int | None, Opt(min=1000)] = None,
    label_delay: Annotated[float | None, Opt(min=0.0, help="Replay in-event labels this many "
                                             "event-time seconds later.")] = None,
    review_threshold: Annotated[float | None, Opt(min=0.0, max=1.0)] = None,
    decline_threshold: Annotated[float | None, Opt(min=0.0, max=1.0)] = None,
    idle_exit: Annotated[float | None, Opt(help="Exit after this many seconds without input.")]
    = None,
    init_from: Annotated[Path | None, Opt(help="Start new partitions from this snapshot "
                                          "(`stream train`, `stream replay --out`).")] = None,
    challenger: Annotated[list[str] | None, Opt(
        metavar="NAME", help="Shadow a challenger model (repeat): logreg-adam-lr0.01, "
        "hoeffding, gnb, ...")] = None,
) -> None:
    """The scorer: consume transactions and labels, publish verdicts, learn online."""
    from stream.serving.gc_policy import keeper_for, tune_for_serving
    from stream.serving.wiring import run_scorer

    settings = settings_from(
        ctx, max_events=max_events, metrics_port=metrics_port, metrics_host=metrics_host,
        input_topic=input_topic,
        output_topic=output_topic, labels_topic=labels_topic, dlq_topic=dlq_topic,
        changelog_topic=changelog_topic, group_id=group_id, guarantee=guarantee,
        checkpoint_interval_ms=checkpoint_interval_ms, checkpoint_idle_ms=checkpoint_idle_ms,
        checkpoint_events=checkpoint_events, transactional_id=transactional_id,
        session_timeout_ms=session_timeout_ms,
        label_delay_s=label_delay, review_threshold=review_threshold,
        decline_threshold=decline_threshold, idle_exit_s=idle_exit, init_from=init_from,
        challengers=tuple(challenger) if challenger else None,
    )
    gc_state = tune_for_serving()  # after the imports above: they are most of the heap
    logging.getLogger("stream.serving.wiring").debug("gc: %s", gc_state)
    result = run_scorer(settings, heap=keeper_for(settings))
    typer.echo(result.line(), err=True)


# -- train, replay, compare (stream/offline) ---------------------------------------------------
register_offline(app)


# -- demo -----------------------------------------------------------------------------------
@app.command()
def demo(
    ctx: typer.Context,
    count: Annotated[int, Opt(min=1, help="Synthetic events to stream.")] = 200_000,
    rate: Annotated[float, Opt(min=1.0, help="Events per second offered.")] = 2000.0,
    fraud_rate: Annotated[float, Opt(min=0.0, max=1.0)] = 0.01,
    metrics_port: Annotated[int, Opt(min=0, max=65535)] = 9108,
    port: Annotated[int, Opt(help="Port of the local broker, if one must be started.")] = 9092,
    seconds: Annotated[float | None, Opt(help="Stop after this long (default: when done).")]
    = None,
) -> None:
    """Local broker if needed, topics, producer and scorer together, with a live summary."""
    from stream.devtools.demo import run_demo

    settings = settings_from(ctx, metrics_port=metrics_port)
    run_demo(settings, count=count, rate=rate, fraud_rate=fraud_rate, broker_port=port,
             seconds=seconds)


note_global_options(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map every expected failure to one line and an exit code.

    Global options may follow the command: argv is normalised first (stream/cli/argv.py).
    Usage errors (unknown option, bad value) are reported by Typer itself, exit code 2.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=normalise_argv(args, shape_of(typer.main.get_command(app))))
    except FraudStreamError as exc:  # every deliberate error; anything else is a bug
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    finally:
        quiet_clients(False)  # leave the process's logging as found (tests call main)
