"""Seeded synthetic card traffic with realistic fraud scenarios, for demos, tests and benchmarks.

Why simulate rather than ship a data set: the demo and the benchmarks need an endless,
reproducible stream whose fraud comes and goes like real fraud and is learnable mostly from
history (a merchant's recent fraud rate from labels that arrive days late, a card's habits and
velocity), which is the kind of signal the online model exists to learn.

Event time is simulated and independent of the wall clock. Cards transact as Poisson processes
with a daily and weekly cycle (`stream.devtools.traffic.world`, `.legit`); fraud is injected
by named scenarios (`SCENARIOS`, see `parse_scenarios` and the README "Synthetic traffic"):
breached merchants (weeks), compromised cards (days), card testing (minutes), stolen cards
(hours) and a small share of fraud that the transaction alone gives away. The whole thing is
drawn a simulated day at a time with numpy, so half a million transactions take seconds.

Three views of the same stream:
- `generate`: transactions with the label inside (`is_fraud`), as replays and demos use;
- `generate_annotated`: the same, with the scenario behind each fraud (never a field);
- `generate_stream`: transactions without labels, and label records that arrive when the
  outcome becomes known (`LabelModel`: chargebacks after about a week, legitimate transactions
  once the no-chargeback period has passed), merged in event time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from stream.devtools.traffic.engine import Day, Simulation, stamps
from stream.devtools.traffic.labels import LabelModel
from stream.devtools.traffic.registry import DEFAULT_SCENARIOS, PATTERNS, SCENARIOS, parse_scenarios
from stream.devtools.traffic.scenarios import Scenario
from stream.devtools.traffic.traffic_config import DEFAULT_START, TrafficConfig

__all__ = [
    "DEFAULT_SCENARIOS", "DEFAULT_START", "PATTERNS", "SCENARIOS", "LabelModel", "Scenario",
    "TrafficConfig", "generate", "generate_annotated", "generate_stream", "parse_scenarios",
]


def generate(config: TrafficConfig) -> Iterator[dict[str, Any]]:
    """Yield the transactions of `config` in non-decreasing event time, `is_fraud` inside.

    >>> events = list(generate(TrafficConfig(3, seed=1)))
    >>> len(events), events[0]["transaction_id"], sorted(events[0])[:3]
    (3, 'tx-1-000000000', ['amount', 'card_id', 'channel'])
    """
    for event, _pattern in generate_annotated(config):
        yield event


def generate_annotated(config: TrafficConfig) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Like `generate`, with the scenario behind each event (None for legitimate ones).

    The scenario is kept out of the event itself so that no model can learn it as a feature.

    >>> config = TrafficConfig(20_000, fraud_rate=0.05, seed=3)
    >>> patterns = {p for _, p in generate_annotated(config)}
    >>> None in patterns and len(patterns) > 1 and patterns <= {None, *PATTERNS}
    True
    """
    sim = Simulation(config)
    for day in sim.days():
        yield from zip(sim.events(day, with_label=True), sim.patterns[day.pattern].tolist(),
                       strict=True)


def generate_stream(config: TrafficConfig) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Transactions and their delayed labels, merged in non-decreasing event time.

    Yields ("transaction", event without `is_fraud`, scenario) and ("label", {"transaction_id",
    "card_id", "is_fraud", "timestamp"}, scenario); a label's time is when it arrives, drawn
    from `config.labels`. After the last transaction the outstanding labels follow in time
    order, so every transaction gets exactly one label. The transactions are exactly those of
    `generate(config)`.

    >>> records = list(generate_stream(TrafficConfig(100, seed=1)))
    >>> [kind for kind, _, _ in records].count("label")
    100
    >>> records[-1][0], sorted(records[-1][1])
    ('label', ['card_id', 'is_fraud', 'timestamp', 'transaction_id'])
    """
    sim = Simulation(config)
    pending: list[tuple[np.ndarray, ...]] = []  # (due, index, card, pattern), one per day
    for day in sim.days():
        delays = config.labels.delays_s(sim.label_rng, day.pattern >= 0)
        index = np.arange(day.first, day.first + len(day))
        pending.append((day.t + delays, index, day.card, day.pattern))
        due, kept = _due(pending, None if day.last else day.end)
        pending = kept
        yield from _merge(sim, day, due)


def _due(pending: list[tuple[np.ndarray, ...]], before: float | None
         ) -> tuple[tuple[np.ndarray, ...], list[tuple[np.ndarray, ...]]]:
    """The labels due before `before` (all if None), sorted by due time, and the rest."""
    now, kept = [], []
    for block in pending:
        mask = np.ones(len(block[0]), bool) if before is None else block[0] < before
        if mask.any():
            now.append(tuple(column[mask] for column in block))
        if not mask.all():
            kept.append(tuple(column[~mask] for column in block))
    if not now:
        return tuple(np.empty(0) for _ in range(4)), kept
    columns = tuple(np.concatenate(parts) for parts in zip(*now, strict=True))
    order = np.argsort(columns[0], kind="stable")
    return tuple(column[order] for column in columns), kept


def _merge(sim: Simulation, day: Day, labels: tuple[np.ndarray, ...]
           ) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    due, index, card, pattern = labels
    events = sim.events(day, with_label=False)
    tx_patterns = sim.patterns[day.pattern].tolist()
    label_patterns = sim.patterns[pattern.astype(np.int64)].tolist()
    bodies = [
        {"transaction_id": f"{sim.prefix}{i:09d}", "card_id": c, "is_fraud": p is not None,
         "timestamp": s}
        for i, c, p, s in zip(index.astype(np.int64).tolist(),
                              sim.card_names[card.astype(np.int64)].tolist(), label_patterns,
                              stamps(due), strict=True)
    ]
    # Ties go to the transaction: a label never comes before the transaction it is about.
    times = np.concatenate([np.floor(day.t * 1000), np.floor(due * 1000)])
    n = len(events)
    for k in np.argsort(times, kind="stable").tolist():
        if k < n:
            yield "transaction", events[k], tx_patterns[k]
        else:
            yield "label", bodies[k - n], label_patterns[k - n]
