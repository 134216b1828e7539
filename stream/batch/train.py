"""One-off mode: `stream train` replays history through the live Pipeline and saves its state.

Training is not a separate code path: the history file goes through the same features,
model and score-then-learn loop as live traffic (partition 0), with the label delay
replayed in event time, so the prequential metrics printed at the end are an honest
estimate of what this model would have achieved in production on that history. The saved
snapshot holds the model and the per-card / per-merchant feature state, which is what
`stream run --init-from` (and `stream compare`) start from.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stream.batch.source import RunStats, Sourced, file_items, run_items
from stream.core.evaluation.prequential import Summary
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.devtools.progress import progress_bar
from stream.state.keys import StateKey
from stream.state.snapshot import PartitionSnapshot, SnapshotError, save_snapshot


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The trained state and how it got there."""

    stats: RunStats
    evaluation: Summary
    snapshot: PartitionSnapshot
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.stats.transactions / self.seconds if self.seconds > 0 else 0.0


def train(
    items: Iterable[Sourced], config: PipelineConfig, model_version: str | None = None,
    init_from: PartitionSnapshot | None = None, progress: bool = False,
    total: int | None = None, merchant_partitions: int | None = None,
) -> TrainResult:
    """Score-then-learn every item on partition 0 and export the partition's state.

    `merchant_partitions=1`: merchant state in a one-partition shared table, as a scorer
    with `merchant_state = "shared"` keeps it; the shared champion (`model_state =
    "shared"`, the default) learns through that table, so it is what a config with it gets
    when no count is given (every item is partition 0's)."""
    if merchant_partitions is None and config.model_state == "shared":
        merchant_partitions = 1
    pipeline = Pipeline(config, model_version, init_from=init_from,
                        merchant_partitions=merchant_partitions)
    pipeline.assign(0)
    started = time.perf_counter()
    with progress_bar("train", total, progress) as tick:
        stats = run_items(pipeline, items, tick=tick)
    seconds = time.perf_counter() - started
    snapshot = pipeline.export_partition(0, with_features=True)
    return TrainResult(stats, pipeline.summary(), snapshot, seconds)


def train_file(
    path: Path, out: Path, config: PipelineConfig, model_version: str | None = None,
    labels: Path | None = None, init_from: PartitionSnapshot | None = None,
    progress: bool = False, key: StateKey | None = None,
    merchant_partitions: int | None = None,
) -> TrainResult:
    """`stream train`: a history file (and optional labels file) in, a snapshot file out,
    signed with `key` (default: the config's state key; one of them is needed)."""
    result = train(file_items(path, labels), config, model_version, init_from, progress,
                   merchant_partitions=merchant_partitions)
    signer = key or config.state_key
    if signer is None:
        raise SnapshotError(f"cannot write {out}: no state key to sign it with")
    save_snapshot(out, result.snapshot, signer)
    return result
