"""Gauges refreshed about once a second from the loop's state (never per event)."""

from __future__ import annotations

import math
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from stream.metrics import Metrics
from stream.pipeline import Pipeline


def refresh(
    metrics: Metrics, consumer: Any, pipeline: Pipeline, positions: dict[TopicPartition, int]
) -> None:
    """Lag per assigned partition, rolling model metrics, state sizes."""
    for tp in list(consumer.assignment()):
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = positions.get(tp)
        if position is None:
            try:
                position = consumer.position(tp, timeout_ms=0)
            except (KafkaError, TypeError, AssertionError):
                position = None
        if position is not None:
            metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
    snap = pipeline.snapshot()
    name = pipeline.model_version
    if not math.isnan(snap.roc_auc):
        metrics.roc_auc.labels(name).set(snap.roc_auc)
    if not math.isnan(snap.log_loss):
        metrics.log_loss.labels(name).set(snap.log_loss)
    for kind, size in pipeline.state_sizes().items():
        metrics.state_keys.labels(kind).set(size)
    metrics.assigned.set(len(pipeline.partitions))


def forget_partition(metrics: Metrics, tp: TopicPartition) -> None:
    """Stop exporting lag for a partition we no longer own (a stale value would mislead)."""
    try:
        metrics.lag.remove(tp.topic, str(tp.partition))
    except KeyError:
        pass
