"""Synthetic streams shared by the generator's tests (cached: each is generated once per run)."""

from __future__ import annotations

import collections
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from stream.devtools.synthetic import TrafficConfig, generate_annotated, generate_stream

TOPICS = Path(__file__).resolve().parents[2] / "topics"
Record = tuple[str, dict[str, Any], str | None]

# 42 days, 1,000 cards, 500 merchants, 1.2 transactions a card a day: about 50,000 transactions
# with enough incidents of every scenario (3% fraud) to check how each behaves.
SCENARIO_STREAM = TrafficConfig.for_days(42, fraud_rate=0.03, seed=7, n_cards=1000,
                                         n_merchants=500, mean_tx_per_card_per_day=1.2)


def big_population(count: int, fraud_rate: float, seed: int) -> TrafficConfig:
    """The benchmark's population: 10,000 cards, 5,000 merchants, 1.2 transactions a day."""
    return TrafficConfig(count, fraud_rate=fraud_rate, seed=seed, n_cards=10_000,
                         n_merchants=5_000, mean_tx_per_card_per_day=1.2)


def validator(name: str) -> Any:
    """A JSON Schema validator (with format checks) for a topic's values, e.g. "labels"."""
    import jsonschema

    schema = json.loads((TOPICS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@cache
def records(config: TrafficConfig = SCENARIO_STREAM) -> list[Record]:
    return list(generate_stream(config))


@cache
def annotated(config: TrafficConfig) -> list[tuple[dict[str, Any], str | None]]:
    return list(generate_annotated(config))


@cache
def transactions(config: TrafficConfig = SCENARIO_STREAM
                 ) -> list[tuple[dict[str, Any], str | None]]:
    """The stream's transactions with their scenario (None: legitimate)."""
    return [(body, pattern) for kind, body, pattern in records(config) if kind == "transaction"]


@cache
def by_card(config: TrafficConfig = SCENARIO_STREAM
            ) -> dict[str, list[tuple[dict[str, Any], str | None]]]:
    cards: dict[str, list[tuple[dict[str, Any], str | None]]] = collections.defaultdict(list)
    for event, pattern in transactions(config):
        cards[event["card_id"]].append((event, pattern))
    return cards
