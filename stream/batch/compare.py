"""Equivalence: `stream compare` scores the same events with two models and measures the gap.

Two modes share one result type:
- two snapshots over a file (or topic range): each continues score-then-learn from its own
  snapshot, on identical input, exactly as `stream run --init-from` would; a snapshot
  compared with itself must give exactly zero difference (the determinism check);
- the live verdicts topic against a replay of a restored snapshot over the same input range:
  the check that production computed what training would have ("production matches
  training"); any difference means skew (other code, other order, other state).

Metrics here are batch numbers over every labelled decision in the range, computed from the
decision-time score and the eventual label (the prequential view, without a window).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from stream.batch.replay import replay_topic
from stream.batch.source import Sourced
from stream.config import Settings
from stream.contracts.codec import decode_verdict
from stream.contracts.messages import Decision, Label, Transaction
from stream.core.evaluation import curves
from stream.core.evaluation.prequential import ThresholdRates
from stream.core.pipeline import Pipeline, PipelineConfig, Scored
from stream.core.scoring.policy import Policy
from stream.kafka.clients import connect
from stream.kafka.ranges import RangeSpec, read_aligned, resolve
from stream.state.snapshot import PartitionSnapshot

HIST_BINS = 40


@dataclass(frozen=True, slots=True)
class Row:
    """One transaction scored by both sides, at decision time."""

    transaction_id: str
    timestamp: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """One side's quality over all labelled decisions of the range."""

    labelled: int
    positives: int
    roc_auc: float
    pr_auc: float
    log_loss: float
    alert_rate: float
    at: dict[str, ThresholdRates]


@dataclass(frozen=True, slots=True)
class Side:
    """Everything the report shows about one model."""

    name: str
    model: str
    metrics: BatchMetrics
    roc: curves.Curve
    pr: curves.Curve
    rolling_auc: list[tuple[float, float]]
    hist_fraud: list[float]
    hist_legit: list[float]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Side by side, and how far apart the two sides are."""

    a: Side
    b: Side
    events: int
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    decisions: dict[tuple[str, str], int]
    thresholds: dict[str, float]
    unmatched: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.events > 0 and self.max_abs_diff == 0.0


def _metrics(pairs: list[tuple[bool, float]], policy: Policy, alerts: float) -> BatchMetrics:
    rank = curves.ranking(pairs)
    at = {name: ThresholdRates(t, *curves.confusion_rates(pairs, t))
          for name, t in (("review", policy.review_threshold),
                          ("decline", policy.decline_threshold))}
    return BatchMetrics(len(pairs), rank.positives, curves.roc_auc(rank),
                        curves.average_precision(rank), curves.log_loss(pairs), alerts, at)


def _rolling_auc(timed: list[tuple[float, bool, float]], window: int,
                 points: int = 120) -> list[tuple[float, float]]:
    if len(timed) < 2:
        return []
    # At most a fifth of the range, so the curve has a shape even for a short file.
    window = max(50, min(window, len(timed) // 5))
    step = max(1, (len(timed) - window) // points)
    out = []
    for end in range(window, len(timed) + 1, step):
        auc = curves.roc_auc(curves.ranking([(y, s) for _, y, s in timed[end - window:end]]))
        if not math.isnan(auc):
            out.append((timed[end - 1][0], auc))
    return out


def _histogram(scores: Iterable[float]) -> list[float]:
    counts = [0.0] * HIST_BINS
    n = 0
    for score in scores:
        counts[min(HIST_BINS - 1, max(0, int(score * HIST_BINS)))] += 1
        n += 1
    return [c / n for c in counts] if n else counts


def _side(name: str, model: str, rows: list[Row], labels: dict[str, bool], pick: str,
          policy: Policy, window: int) -> Side:
    timed = [(r.timestamp, labels[r.transaction_id], getattr(r, pick)) for r in rows
             if r.transaction_id in labels]
    pairs = [(y, s) for _, y, s in timed]
    alerts = (sum(getattr(r, pick) >= policy.review_threshold for r in rows) / len(rows)
              if rows else math.nan)
    return Side(name, model, _metrics(pairs, policy, alerts), curves.roc_curve(pairs),
                curves.pr_curve(pairs), _rolling_auc(timed, window),
                _histogram(s for y, s in pairs if y), _histogram(s for y, s in pairs if not y))


def summarise(
    rows: list[Row], labels: dict[str, bool], names: tuple[str, str], models: tuple[str, str],
    policy: Policy, window: int = 2000,
) -> Comparison:
    """Agreement, score distance and both sides' metrics, from scored rows and labels."""
    decisions: Counter[tuple[Decision, Decision]] = Counter(
        (policy.decide(r.a), policy.decide(r.b)) for r in rows)
    diffs = [abs(r.a - r.b) for r in rows]
    agree = sum(n for (da, db), n in decisions.items() if da == db)
    return Comparison(
        a=_side(names[0], models[0], rows, labels, "a", policy, window),
        b=_side(names[1], models[1], rows, labels, "b", policy, window),
        events=len(rows),
        agreement=agree / len(rows) if rows else math.nan,
        max_abs_diff=max(diffs, default=math.nan),
        mean_abs_diff=sum(diffs) / len(diffs) if diffs else math.nan,
        decisions={(da, db): n for (da, db), n in sorted(decisions.items())},
        thresholds={"review": policy.review_threshold, "decline": policy.decline_threshold},
    )


def compare_snapshots(
    a: PartitionSnapshot, b: PartitionSnapshot, items: Iterable[Sourced],
    config: PipelineConfig, names: tuple[str, str] = ("A", "B"),
    merchant_partitions: int | None = None,
) -> Comparison:
    """Both snapshots continue score-then-learn on the same items, in lockstep
    (`merchant_partitions`: a shared merchant table over that many partitions, as
    `replay_items` keeps it)."""
    pa = Pipeline(config, a.model_name or None, init_from=a,
                  merchant_partitions=merchant_partitions)
    pb = Pipeline(config, b.model_name or None, init_from=b,
                  merchant_partitions=merchant_partitions)
    rows: list[Row] = []
    labels: dict[str, bool] = {}
    invalid = 0
    for partition, item, _ in items:
        if isinstance(item, Transaction):
            sa, sb = pa.score(item, partition), pb.score(item, partition)
            rows.append(Row(item.transaction_id, item.timestamp, sa.score, sb.score))
            if item.is_fraud is not None:
                labels[item.transaction_id] = item.is_fraud
        elif isinstance(item, Label):
            pa.learn_label(item)
            pb.learn_label(item)
            labels[item.transaction_id] = item.is_fraud
        else:
            invalid += 1
    result = summarise(rows, labels, names, (pa.model_version, pb.model_version),
                       config.policy, config.metrics_window)
    notes = [f"{invalid} invalid records skipped (the scorer would dead-letter them)"] \
        if invalid else []
    return replace(result, notes=notes)


def compare_live(
    settings: Settings, config: PipelineConfig, snapshot: PartitionSnapshot | None,
    spec: RangeSpec, verdicts_topic: str | None = None, with_labels: bool = True,
    model_version: str | None = None,
) -> Comparison:
    """Live verdicts (A) against a replay over the same input range (B) that starts from
    `snapshot`, or from a new model when the live scorer started from scratch."""
    replayed: dict[str, Row] = {}
    labels: dict[str, bool] = {}

    def collect(partition: int, tx: Transaction, scored: Scored, origin: Any) -> None:
        replayed[tx.transaction_id] = Row(tx.transaction_id, tx.timestamp, math.nan,
                                          scored.score)
        if tx.is_fraud is not None:
            labels[tx.transaction_id] = tx.is_fraud

    version = snapshot.model_name if snapshot is not None else model_version
    result = replay_topic(settings, config, spec, model_version=version or None,
                          init_from=snapshot, with_labels=with_labels, on_scored=collect)
    live, model = _read_verdicts(settings, verdicts_topic or settings.output_topic, replayed)
    rows = [replace(row, a=live[tx_id]) for tx_id, row in replayed.items() if tx_id in live]
    rows.sort(key=lambda r: r.timestamp)
    comparison = summarise(rows, labels, ("live", "replay"), (model, result.pipeline.model_version),
                           config.policy, config.metrics_window)
    missing = len(replayed) - len(rows)
    notes = [f"{missing} replayed transactions have no live verdict"] if missing else []
    return replace(comparison, unmatched=missing, notes=notes)


def _read_verdicts(settings: Settings, topic: str, wanted: dict[str, Row]) -> tuple[
        dict[str, float], str]:
    """Scores on the verdicts topic for the wanted transaction ids (the last one wins)."""
    reader = connect(settings).reader()
    scores: dict[str, float] = {}
    models: Counter[str] = Counter()
    try:
        for batch in read_aligned(reader, resolve(reader, topic, RangeSpec())):
            for record in batch:
                if record.value is None:
                    continue
                body = decode_verdict(record.value)
                tx_id = body.get("transaction_id")
                if tx_id in wanted:
                    scores[tx_id] = float(body["score"])
                    models[str(body.get("model_version", "?"))] += 1
    finally:
        reader.close()
    return scores, (models.most_common(1)[0][0] if models else "?")
