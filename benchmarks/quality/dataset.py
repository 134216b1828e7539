"""The stream the quality benchmark judges on: realistic fraud scenarios, labels that arrive
days to weeks late, and the ground truth kept beside it (never inside the events).

Every record is serialised and decoded with the scorer's own codec, exactly as it would be
read from Kafka, and the raw bytes are kept for the Kafka-backed check, so the in-process
systems and `stream run` see the same values to the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import orjson

from benchmarks.quality.metrics import Holdout
from stream.contracts.codec import decode_label, decode_transaction
from stream.contracts.messages import Label, Transaction
from stream.devtools.synthetic import TrafficConfig, generate_stream

DAY_S = 86400.0


@dataclass(slots=True)
class Dataset:
    """Transactions and labels in produce order, with the truth and label times per transaction."""

    items: list[Transaction | Label] = field(default_factory=list)
    raw: list[tuple[bool, bytes, bytes]] = field(default_factory=list)  # (is_label, key, value)
    transactions: list[Transaction] = field(default_factory=list)
    patterns: list[str | None] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    label_time: list[float] = field(default_factory=list)  # +inf: not labelled in the stream
    start: float = 0.0
    end: float = 0.0
    fraud: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_labels(self) -> int:
        return len(self.items) - len(self.transactions)

    def holdout(self, start: float, end: float) -> tuple[np.ndarray, Holdout]:
        """The transactions in [start, end) (their indices) as a metrics Holdout."""
        idx = np.flatnonzero((self.times >= start) & (self.times < end))
        cards: dict[str, int] = {}
        codes = np.array([cards.setdefault(self.transactions[i].card_id, len(cards))
                          for i in idx.tolist()], dtype=np.int64)
        first_fraud: dict[str, float] = {}
        for i, tx in enumerate(self.transactions):
            if self.fraud[i] and self.label_time[i] < first_fraud.get(tx.card_id, math.inf):
                first_fraud[tx.card_id] = self.label_time[i]
        known = np.array([first_fraud.get(self.transactions[i].card_id, math.inf)
                          for i in idx.tolist()])
        days = max(1, round((end - start) / DAY_S))
        return idx, Holdout(self.times[idx], codes, self.fraud[idx], known, start, days)


def build(config: TrafficConfig) -> Dataset:
    """Generate the stream; labels after the last transaction are left out (no system can use
    them before the test period ends)."""
    data = Dataset()
    fraud: list[bool] = []
    for kind, body, pattern in generate_stream(config):
        key = body["card_id"].encode()
        value = orjson.dumps(body)
        if kind == "transaction":
            tx = decode_transaction(value)
            data.index[tx.transaction_id] = len(data.transactions)
            data.transactions.append(tx)
            data.patterns.append(pattern)
            data.label_time.append(math.inf)
            fraud.append(pattern is not None)
            data.items.append(tx)
            data.raw.append((False, key, value))
        else:
            label = decode_label(value)
            data.items.append(label)
            data.raw.append((True, key, value))
            i = data.index.get(label.transaction_id)
            if i is not None:
                data.label_time[i] = label.timestamp
    last = data.transactions[-1].timestamp if data.transactions else 0.0
    while data.items and isinstance(data.items[-1], Label) and data.items[-1].timestamp > last:
        dropped = data.items.pop()
        data.raw.pop()
        assert isinstance(dropped, Label)
        i = data.index.get(dropped.transaction_id)
        if i is not None:
            data.label_time[i] = math.inf
    data.fraud = np.array(fraud, dtype=bool)
    data.times = np.array([tx.timestamp for tx in data.transactions])
    first = config.start.timestamp() if config.start is not None else \
        (math.floor(data.times[0] / DAY_S) * DAY_S if len(data.times) else 0.0)
    data.start = first
    data.end = last
    return data
