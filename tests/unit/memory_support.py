"""Running a stream of transactions and labels through partition 0, for the tests of the
memories of recent decisions and learned labels (duplicates, corrections, their changelog)."""

from __future__ import annotations

from typing import Any

from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import Pipeline


def run_items(pipe: Pipeline, items: list[Transaction | Label]) -> list[Any]:
    """What partition 0 answered to each item: (score, decision, duplicate) for a
    transaction, the label's outcome for a label."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, Transaction):
            scored = pipe.score(item, 0)
            out.append((scored.score, scored.decision, scored.duplicate))
        else:
            out.append(pipe.learn_label(item))
    return out
