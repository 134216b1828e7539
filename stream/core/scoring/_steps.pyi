"""Types of the compiled loops (_steps.c); `NotImplemented` when one declines an input."""

from collections.abc import Collection, MutableMapping
from typing import Any

def scale(counts: MutableMapping[str, int], means: MutableMapping[str, float],
          vars: MutableMapping[str, float], names: tuple[str, ...], values: Collection[float],
          heavy: tuple[bool, ...], learn: bool) -> dict[str, float] | Any: ...
def add_crosses(out: dict[str, float], plan: tuple[tuple[str, str, str], ...]) -> Any: ...
def frozen(names: tuple[str, ...], values: Collection[float], heavy: tuple[bool, ...],
           means: list[float], stds: list[float]) -> dict[str, float] | Any: ...
def frozen_dot(features: dict[str, float], heavy: tuple[bool, ...], means: list[float],
               stds: list[float], weights: list[float], crosses: tuple[tuple[int, int], ...],
               cross_weights: list[float]) -> float | Any: ...
