"""The scenario names, the realistic default mix, and the text form used on the command line."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from stream.devtools.traffic.bursts import CardTesting, StolenCard, TransactionOnly
from stream.devtools.traffic.scenarios import BreachedMerchant, CompromisedCard, Scenario

SCENARIOS: dict[str, type] = {
    cls.name: cls
    for cls in (BreachedMerchant, CompromisedCard, CardTesting, StolenCard, TransactionOnly)
}
PATTERNS: tuple[str, ...] = tuple(SCENARIOS)
DEFAULT_SCENARIOS: tuple[Scenario, ...] = tuple(cls() for cls in SCENARIOS.values())


def parse_scenarios(text: str) -> tuple[Scenario, ...]:
    """Scenarios from text: "realistic" (all five with their defaults) or a comma-separated list
    of names, each with optional `:param=value;param=value` overrides.

    >>> [s.name for s in parse_scenarios("realistic")]
    ['breached_merchant', 'compromised_card', 'card_testing', 'stolen_card', 'transaction_only']
    >>> parse_scenarios("breached_merchant:per_day=3;days_max=21,card_testing")[0].days_max
    21.0
    >>> parse_scenarios("skimming")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown scenario 'skimming'; valid: realistic, breached_merchant, ...
    """
    text = text.strip()
    if text == "realistic":
        return DEFAULT_SCENARIOS
    if not text:
        raise ValueError(f"no scenario given; valid: {_valid_names()}")
    return tuple(_parse_one(part.strip()) for part in text.split(","))


def _valid_names() -> str:
    return ", ".join(("realistic", *SCENARIOS))


def _parse_one(part: str) -> Scenario:
    name, _, overrides = part.partition(":")
    name = name.strip()
    cls = SCENARIOS.get(name)
    if cls is None:
        raise ValueError(f"unknown scenario {name!r}; valid: {_valid_names()}")
    types = {f.name: f.type for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (o.strip() for o in overrides.split(";"))):
        key, sep, value = (x.strip() for x in item.partition("="))
        if key not in types:
            raise ValueError(f"unknown parameter {key!r} of {name}; valid: {', '.join(types)}")
        if not sep:
            raise ValueError(f"{name}: expected {key}=VALUE, got {item!r}")
        kind = int if types[key] in (int, "int") else float
        try:
            kwargs[key] = kind(value)
        except ValueError:
            raise ValueError(f"{name}: {key} must be {kind.__name__}, got {value!r}") from None
    return cls(**kwargs)  # type: ignore[no-any-return]
