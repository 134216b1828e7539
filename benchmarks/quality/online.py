"""The online systems, run in process exactly as a consumer group of P partitions runs them.

Records are split by the producer's key hash into P partitions and processed in the order
one scorer owning them all would process them (stream/contracts/partitioning.py): score each
transaction as it comes, learn each label when it arrives. The pipeline is built from the
default settings, so this is the scorer as shipped, not a tuned copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.quality.dataset import Dataset
from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.contracts.partitioning import consumed_order
from stream.core.pipeline import Pipeline

# Every challenger family of the model zoo, with the parameters the README suggests.
CHALLENGERS = ("logreg-adam-lr0.01", "logreg-lr0.05-w10", "alma", "hoeffding-g100", "hat",
               "gnb")


@dataclass(slots=True)
class OnlineRun:
    """Decision-time scores per transaction (dataset order), and optionally the features."""

    partitions: int
    scores: np.ndarray
    challengers: dict[str, np.ndarray] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    features: np.ndarray | None = None
    labels_learned: int = 0
    seconds: float = 0.0


def run_online(data: Dataset, partitions: int, challengers: tuple[str, ...] = (),
               keep_features: bool = False, **settings: Any) -> OnlineRun:
    """Prequential pass over the whole stream: score, then learn each label as it arrives."""
    import time

    config = load_settings(environ={}, challengers=challengers, **settings)
    pipeline = Pipeline(pipeline_config(config), model_version(config))
    n = len(data.transactions)
    scores = np.full(n, np.nan)
    shadow = {name: np.full(n, np.nan) for name in challengers}
    names: tuple[str, ...] = ()
    features: np.ndarray | None = None
    index = data.index
    learned = 0
    started = time.perf_counter()
    for partition, item in consumed_order(data.items, partitions):
        if isinstance(item, Transaction):
            scored = pipeline.score(item, partition)
            i = index[item.transaction_id]
            scores[i] = scored.score
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
    return OnlineRun(partitions, scores, shadow, names, features, learned,
                     time.perf_counter() - started)
