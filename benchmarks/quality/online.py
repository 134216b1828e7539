"""The online systems, run in process exactly as a consumer group of P partitions runs them.

Records are split by the producer's key hash into P partitions and processed in the order
one scorer owning them all would process them (stream/contracts/partitioning.py): score each
transaction as it comes, learn each label when it arrives. The pipeline is built from the
default settings, so this is the scorer as shipped, not a tuned copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.quality.dataset import Dataset
from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.contracts.partitioning import consumed_order, partition_for
from stream.core.pipeline import Pipeline

# Every challenger family of the model zoo, with the parameters the README suggests.
CHALLENGERS = ("logreg-adam-lr0.01", "logreg-lr0.05-w10", "alma", "hoeffding-g100", "hat",
               "gnb")


@dataclass(slots=True)
class OnlineRun:
    """Decision-time scores per transaction (dataset order), and optionally the features.

    `alerts` marks the published decisions that were not `approve` (what the analysts got),
    `warming` those decided by the cold-start fallback (stream/core/scoring/warmup.py) rather
    than by the score; both in dataset order.
    """

    partitions: int
    scores: np.ndarray
    alerts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    warming: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    challengers: dict[str, np.ndarray] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    features: np.ndarray | None = None
    labels_learned: int = 0
    seconds: float = 0.0
    shared: bool = False


def run_online(data: Dataset, partitions: int, challengers: tuple[str, ...] = (),
               keep_features: bool = False, shared_merchants: bool = False,
               **settings: Any) -> OnlineRun:
    """Prequential pass over the whole stream: score, then learn each label as it arrives.

    ``shared_merchants``: one merchant table over all partitions (features/merchant_table.py),
    each partition's watermark advanced by its next queued record, as the live intake does,
    and one champion learned through it (``model_state = "shared"``, scoring/timeline.py).
    """
    import time

    state = "shared" if shared_merchants else "partition"  # the table and its champion, or not
    settings = {"merchant_state": state, "model_state": state, **settings}
    config = load_settings(environ={}, challengers=challengers, **settings)
    pipeline = Pipeline(pipeline_config(config), model_version(config),
                        merchant_partitions=partitions if shared_merchants else None)
    n = len(data.transactions)
    scores = np.full(n, np.nan)
    alerts = np.zeros(n, dtype=bool)
    warming = np.zeros(n, dtype=bool)
    shadow = {name: np.full(n, np.nan) for name in challengers}
    names: tuple[str, ...] = ()
    features: np.ndarray | None = None
    index = data.index
    learned = 0
    heads = _Heads(data, partitions) if shared_merchants else None
    if heads is not None:
        for partition in range(partitions):
            pipeline.lookahead(partition, heads.head(partition))
    started = time.perf_counter()
    for partition, item in consumed_order(data.items, partitions):
        if isinstance(item, Transaction):
            scored = pipeline.score(item, partition)
            i = index[item.transaction_id]
            scores[i] = scored.score
            alerts[i] = scored.decision != "approve"
            warming[i] = scored.model_state == "warming"
            for name, value in scored.challengers.items():
                shadow[name][i] = value
            if keep_features:
                if features is None:
                    names = tuple(scored.features)
                    features = np.full((n, len(names)), np.nan)
                values = scored.features
                features[i] = [values[f] for f in names]
        elif pipeline.learn_label(item) == "learned":
            learned += 1
        if heads is not None:
            pipeline.lookahead(partition, heads.consumed(partition, item))
    return OnlineRun(partitions, scores, alerts, warming, shadow, names, features, learned,
                     time.perf_counter() - started, shared=shared_merchants)


class _Heads:
    """The next queued record's time of each partition's two sources (what the live intake
    knows from its fetch buffers), advanced as records are consumed."""

    def __init__(self, data: Dataset, partitions: int) -> None:
        self.times: dict[tuple[int, int], list[float]] = {}
        for item in data.items:
            partition = partition_for(item.card_id.encode(), partitions)
            kind = 0 if isinstance(item, Transaction) else 1
            self.times.setdefault((kind, partition), []).append(item.timestamp)
        self.at = dict.fromkeys(self.times, 0)

    def _next(self, source: tuple[int, int]) -> float:
        times = self.times.get(source, ())
        i = self.at.get(source, 0)
        return times[i] if i < len(times) else math.inf

    def head(self, partition: int) -> float:
        return min(self._next((0, partition)), self._next((1, partition)))

    def consumed(self, partition: int, item: object) -> float:
        source = (0 if isinstance(item, Transaction) else 1, partition)
        self.at[source] += 1
        return self.head(partition)
