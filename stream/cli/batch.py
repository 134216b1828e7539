"""`stream train`, `stream replay` and `stream compare`: thin wrappers over stream.batch.

`register(app)` adds them to the `stream` Typer app. Every failure a user can cause (a
missing file, a bad snapshot, an unreachable broker, a bad range) is raised as ConfigError,
SnapshotError or InfrastructureError, which `stream.cli.app.main` prints as one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stream.cli.options import settings_from
from stream.config import Settings
from stream.errors import ConfigError
from stream.state.keys import StateKey
from stream.state.snapshot import PartitionSnapshot, load_snapshot

Opt = typer.Option
FileOpt = Annotated[Path | None, Opt(help="Transactions file (.csv or .jsonl).")]
LabelsFileOpt = Annotated[Path | None, Opt(
    "--labels", help="Labels file (transaction_id, card_id, is_fraud, timestamp), merged by "
    "event time.")]
DelayOpt = Annotated[float | None, Opt(
    min=0.0, help="Apply in-event labels this many event-time seconds late (a chargeback "
    "takes days).")]
InitOpt = Annotated[Path | None, Opt(help="Start from this snapshot instead of a new model.")]
ProgressOpt = Annotated[bool, Opt(help="Show a progress bar (on a terminal).")]
FromOffsetOpt = Annotated[str | None, Opt(help="Start offset: N, or P:N,P:N per partition.")]
FromTimeOpt = Annotated[str | None, Opt(help="Start at this record time (RFC 3339 or epoch ms).")]
ToOffsetOpt = Annotated[str | None, Opt(help="End offset, exclusive: N or P:N,... "
                                        "(default: the end when the replay starts).")]
ToTimeOpt = Annotated[str | None, Opt(help="End before this record time (RFC 3339 or epoch ms).")]


def _settings(ctx: typer.Context, **flags: Any) -> Settings:
    return settings_from(ctx, **flags)


def _config(settings: Settings, init: PartitionSnapshot | None) -> tuple[Any, str]:
    """The core's config, and the model version (the snapshot's model when starting from one)."""
    from stream.assembly import model_version, pipeline_config

    version = init.model_name if init is not None and init.model_name else \
        model_version(settings)
    return pipeline_config(settings), version


def _one_table(settings: Settings) -> int | None:
    """A history file is one stream, run as partition 0: with `merchant_state = "shared"` its
    merchant state (and a shared champion) lives in a one-partition table, as the scorer
    keeps it (without it a shared champion has nothing to learn through)."""
    from stream.assembly import merchant_partitions

    return merchant_partitions(settings, 1)


def _bounds(settings: Settings) -> Any:
    """The event-time bounds the live scorer applies, for files too (settings' skews)."""
    from stream.assembly import time_bounds

    return time_bounds(settings)


def _existing(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    return path


def _key(settings: Settings) -> StateKey:
    """The state key that signs and authenticates snapshot files (stream.assembly)."""
    from stream.assembly import state_key

    return state_key(settings)


def _load(path: Path | None, key: StateKey | None) -> PartitionSnapshot | None:
    return load_snapshot(path, key) if path is not None else None


def _range(from_offset: str | None, from_time: str | None, to_offset: str | None,
           to_time: str | None) -> Any:
    from stream.kafka.ranges import RangeSpec, parse_offsets, parse_time

    return RangeSpec(parse_offsets(from_offset), parse_time(from_time), parse_offsets(to_offset),
                     parse_time(to_time))


def train_command(
    ctx: typer.Context,
    out: Annotated[Path, Opt(help="Snapshot file to write (model and feature state).")],
    file: Annotated[Path | None, Opt(help="History: transactions (.csv or .jsonl), in "
                                     "event-time order, labels inside (is_fraud) or in "
                                     "--labels.")] = None,
    synthetic: Annotated[int | None, Opt(min=1, help="Instead of a file: this many synthetic "
                                         "transactions (reproducible with --seed).")] = None,
    seed: Annotated[int, Opt(help="Seed of --synthetic.")] = 7,
    fraud_rate: Annotated[float, Opt(min=0.0, max=0.5, help="Fraud rate of --synthetic.")]
    = 0.01,
    scenario: Annotated[str, Opt(help="Fraud scenarios of --synthetic: 'realistic' or a list "
                                 "such as 'card_testing,stolen_card:p_night=0.9' (as for "
                                 "`stream produce --scenario`).")] = "realistic",
    realistic_labels: Annotated[bool, Opt(
        "--realistic-labels/--labels-in-event",
        help="--synthetic labels as separate records that arrive when known (fraud after a "
        "lognormal delay, median 7 days; legitimate after 7-8 days), as `stream produce "
        "--labels topic` sends them; or inside each event (the default).")] = False,
    labels: LabelsFileOpt = None,
    label_delay: DelayOpt = None,
    init_from: InitOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """One-off training: replay history through the live pipeline and save a snapshot."""
    from stream.batch.report import prequential_lines
    from stream.batch.source import file_items, synthetic_items
    from stream.batch.train import train
    from stream.state.snapshot import save_snapshot

    if (file is None) == (synthetic is None):
        raise ConfigError("train needs exactly one of --file or --synthetic")
    if realistic_labels and (synthetic is None or label_delay is not None):
        raise ConfigError("--realistic-labels needs --synthetic and no --label-delay")
    _existing(file, "file")
    _existing(labels, "labels file")
    settings = _settings(ctx, label_delay_s=label_delay)
    key = _key(settings)  # before training: a missing key is not found out an hour later
    init = _load(init_from, key)
    config, version = _config(settings, init)
    items = file_items(file, labels, _bounds(settings)) if file is not None else \
        synthetic_items(synthetic or 0, seed, fraud_rate, scenario=scenario,
                        delayed_labels=realistic_labels)
    result = train(items, config, version, init, progress, total=synthetic,
                   merchant_partitions=_one_table(settings))
    save_snapshot(out, result.snapshot, key)
    s = result.stats
    typer.echo(f"trained on {s.transactions:,} transactions and {s.labels:,} labels "
               f"({s.invalid_total:,} invalid skipped), learned from {s.learned:,} labels, "
               f"in {result.seconds:.1f}s ({result.events_per_second:,.0f} events/s)")
    for line in prequential_lines(result.evaluation):
        typer.echo(line)
    typer.echo(f"wrote {out} (model {result.snapshot.model_name}, "
               f"{len(result.snapshot.features.get('cards', {})):,} cards)")


def replay_command(
    ctx: typer.Context,
    file: FileOpt = None,
    labels: LabelsFileOpt = None,
    input_topic: Annotated[str | None, Opt(help="Topic to replay (default: the input topic).")]
    = None,
    labels_topic: Annotated[str | None, Opt()] = None,
    output_topic: Annotated[str | None, Opt(help="The live verdicts topic (never written).")]
    = None,
    with_labels: Annotated[bool, Opt("--with-labels/--no-labels",
                                     help="Also replay the labels topic over the same times.")]
    = True,
    from_offset: FromOffsetOpt = None,
    from_time: FromTimeOpt = None,
    to_offset: ToOffsetOpt = None,
    to_time: ToTimeOpt = None,
    init_from: InitOpt = None,
    out: Annotated[Path | None, Opt(help="Write the resulting state as a snapshot (warm-up).")]
    = None,
    to_topic: Annotated[str | None, Opt(help="Back-fill verdicts to this topic (never the "
                                        "input or the live verdicts topic).")] = None,
    single_model: Annotated[bool, Opt(help="One model for all partitions (for a warm-up "
                                      "snapshot) instead of one per partition, as live.")]
    = False,
    label_delay: DelayOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Batch mode: re-process a topic range or a file, to warm up a model or back-fill verdicts;
    reads without a consumer group, so the live scorer is not disturbed."""
    from stream.batch.replay import VerdictWriter, replay_items, replay_topic
    from stream.batch.report import prequential_lines
    from stream.batch.source import file_items
    from stream.state.snapshot import save_snapshot

    settings = _settings(ctx, input_topic=input_topic, labels_topic=labels_topic,
                         output_topic=output_topic, label_delay_s=label_delay)
    if to_topic is not None and to_topic in (settings.input_topic, settings.output_topic):
        raise ConfigError(f"refusing to back-fill into {to_topic!r}: it is the live input or "
                          "verdicts topic; choose a separate topic")
    key = _key(settings) if out is not None or init_from is not None else None
    init = _load(init_from, key)
    config, version = _config(settings, init)
    if file is not None:
        _existing(file, "file")
        _existing(labels, "labels file")
        producer = None
        if to_topic is not None:
            from stream.kafka.clients import connect

            producer = connect(settings).producer(linger_ms=20.0)
        try:
            target = to_topic or ""
            factory = (lambda p: VerdictWriter(producer, target, p)) if producer else None
            pipeline, stats, sent, seconds = replay_items(
                file_items(file, labels, _bounds(settings)), config, version, init, factory,
                None, progress, merchant_partitions=_one_table(settings))
        finally:
            if producer is not None:
                producer.close(10.0)
        evaluation, spans = pipeline.summary(), {str(file): (0, stats.transactions)}
    else:
        result = replay_topic(
            settings, config, _range(from_offset, from_time, to_offset, to_time),
            model_version=version, init_from=init, with_labels=with_labels,
            single_model=single_model, to_topic=to_topic, progress=progress)
        pipeline, stats, sent, seconds = result.pipeline, result.stats, result.verdicts_sent, \
            result.seconds
        evaluation, spans = result.evaluation, result.ranges
    for name, (start, end) in spans.items():
        typer.echo(f"  {name}: [{start}, {end})")
    typer.echo(f"replayed {stats.transactions:,} transactions and {stats.labels:,} labels "
               f"({stats.invalid_total:,} invalid skipped) in {seconds:.1f}s; "
               f"{sent:,} verdicts back-filled" + (f" to {to_topic}" if to_topic else ""))
    for line in prequential_lines(evaluation):
        typer.echo(line)
    if out is not None:
        partitions = sorted(pipeline.partitions)
        if len(partitions) > 1:
            raise ConfigError("--out needs one model: add --single-model to fold the "
                              f"{len(partitions)} partitions into one")
        if not partitions:
            raise ConfigError("nothing was replayed: no snapshot written")
        assert key is not None  # resolved above, as --out was given
        save_snapshot(out, pipeline.export_partition(partitions[0], with_features=True), key)
        typer.echo(f"wrote {out}")


def compare_command(
    ctx: typer.Context,
    snapshots: Annotated[list[Path] | None, typer.Argument(
        help="A.snapshot B.snapshot (file mode); with --live, the snapshot the live scorer "
        "started from (none: it started from scratch).")] = None,
    file: FileOpt = None,
    labels: LabelsFileOpt = None,
    live: Annotated[bool, Opt(help="Compare the live verdicts topic with a replay of the "
                              "snapshot over the input range (production matches training).")]
    = False,
    verdicts_topic: Annotated[str | None, Opt(help="Live verdicts (default: output topic).")]
    = None,
    input_topic: Annotated[str | None, Opt()] = None,
    labels_topic: Annotated[str | None, Opt()] = None,
    from_offset: FromOffsetOpt = None,
    from_time: FromTimeOpt = None,
    to_offset: ToOffsetOpt = None,
    to_time: ToTimeOpt = None,
    html: Annotated[Path | None, Opt(help="Also write a self-contained HTML report here.")]
    = None,
    label_delay: DelayOpt = None,
    fail_on_difference: Annotated[bool, Opt(help="Exit 3 when any score differs.")] = False,
) -> None:
    """Equivalence: score the same events with two snapshots (or live vs replay) and report
    agreement, score differences and each one's metrics."""
    from stream.batch.compare import compare_live, compare_snapshots
    from stream.batch.report import html_report, text_report
    from stream.batch.source import file_items

    settings = _settings(ctx, input_topic=input_topic, labels_topic=labels_topic,
                         label_delay_s=label_delay)
    snapshots = snapshots or []
    for path in snapshots:
        _existing(path, "snapshot")
    if live:
        if len(snapshots) > 1:
            raise ConfigError("--live compares the verdicts topic with one snapshot (or none)")
        snapshot = _load(snapshots[0], _key(settings)) if snapshots else None
        config, version = _config(settings, snapshot)
        comparison = compare_live(settings, config, snapshot,
                                  _range(from_offset, from_time, to_offset, to_time),
                                  verdicts_topic, model_version=version)
    else:
        if len(snapshots) != 2:
            raise ConfigError("compare needs two snapshots (or one with --live)")
        if file is None:
            raise ConfigError("compare needs --file with the events to score (or --live)")
        _existing(file, "file")
        _existing(labels, "labels file")
        key = _key(settings)
        a, b = (load_snapshot(p, key) for p in snapshots)
        config, _ = _config(settings, a)
        comparison = compare_snapshots(a, b, file_items(file, labels, _bounds(settings)),
                                       config, (snapshots[0].name, snapshots[1].name),
                                       merchant_partitions=_one_table(settings))
    typer.echo(text_report(comparison))
    if html is not None:
        html.write_text(html_report(comparison), encoding="utf-8")
        typer.echo(f"wrote {html}")
    if fail_on_difference and not comparison.identical:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add `train`, `replay` and `compare` to the `stream` command."""
    app.command("train")(train_command)
    app.command("replay")(replay_command)
    app.command("compare")(compare_command)
