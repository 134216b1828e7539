"""Memory is budgeted in bytes, not only in entries (issue 13, item 5): the early-label,
pending and card stores estimate their bytes as entries come and go, drop their oldest
entries beyond their budget, and export both; the estimates track real allocations."""

from __future__ import annotations

import tracemalloc
from array import array
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from keys_support import KEY
from prometheus_client import CollectorRegistry

from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.contracts.messages import Label
from stream.core.budget import ByteBudget
from stream.core.features.store import StateStore
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.pending import Decided, PendingBuffer
from stream.observability.lag import refresh_budgets
from stream.observability.metrics import Metrics

MiB = 2**20


def _tx(i: int, card: str | None = None, tx_id: str | None = None) -> Any:
    return decode_transaction(orjson.dumps({
        "transaction_id": tx_id or f"t{i}", "card_id": card or f"card-{i}",
        "merchant_id": f"m{i % 5}", "amount": 12.0, "timestamp": 1_700_000_000_000 + i * 1000,
    }), max_length=10**7)


def test_early_labels_with_huge_ids_stay_within_their_byte_budget() -> None:
    """The issue's attack: labels for unknown transactions with 700 KB ids, each held until
    its transaction comes. 100,000 of them fit the count bound; the byte budget holds."""
    pipe = Pipeline(PipelineConfig(early_label_max_bytes=4 * MiB))
    for i in range(40):
        assert pipe.learn_label(Label(f"{i:04d}" + "x" * 700_000, "c", True, 1.7e9)) == "held"
    assert pipe.early_budget.used <= 4 * MiB
    assert pipe.state_sizes()["early_labels"] == 5 and pipe.early_budget.dropped == 35
    assert pipe.unmatched_labels == 35
    held = next(iter(pipe._early))  # the oldest left: the earlier ones went first
    assert held.startswith("0035")


def test_an_early_label_matched_gives_its_bytes_back() -> None:
    pipe = Pipeline(PipelineConfig(early_label_max_bytes=MiB))
    pipe.learn_label(Label("t1", "card-1", True, 1.7e9))
    assert pipe.early_budget.used > 0
    pipe.score(_tx(1, card="card-1", tx_id="t1"), 0)
    assert pipe.early_budget.used == 0 and pipe.state_sizes()["early_labels"] == 0


def test_pending_records_stay_within_their_byte_budget_and_drops_are_tombstoned() -> None:
    config = PipelineConfig(pending_max_bytes=MiB, track_changes=True, state_key=KEY)
    pipe = Pipeline(config)
    for i in range(200):  # unlabelled: every one waits for its label
        pipe.score(_tx(i, tx_id=f"{i:04d}" + "p" * 20_000), 0)
    budget = pipe.pending.budget
    assert budget.used <= MiB and budget.dropped > 100
    assert len(pipe.pending) + budget.dropped == 200
    rows = pipe.drain_changes(0).pending
    assert sum(row is None for row in rows.values()) == budget.dropped
    for tx_id, _ in list(pipe.pending.items_for(0)):
        pipe.pending.pop(tx_id)
    assert budget.used == 0


def test_card_state_of_every_partition_shares_one_budget() -> None:
    config = PipelineConfig(card_state_max_bytes=MiB, track_changes=True, state_key=KEY)
    pipe = Pipeline(config)
    for i in range(400):
        pipe.score(_tx(i, card=f"{i:04d}" + "c" * 5000), i % 2)
    budget = pipe.card_budget
    assert budget.used <= MiB and budget.dropped > 0
    cards = pipe.state_sizes()["cards"]
    assert cards + budget.dropped == 400
    evicted = [k for p in (0, 1) for k in pipe.drain_changes(p).cards_evicted]
    assert len(evicted) == budget.dropped  # changelog tombstones for every dropped card
    pipe.revoke(1)
    assert budget.used == sum(s.features.card_store.bytes for s in pipe.partitions.values())
    pipe.revoke(0)
    assert budget.used == 0


def test_the_key_being_written_is_never_the_one_dropped() -> None:
    store = StateStore(width=2, ttl_s=10.0, budget=ByteBudget(limit=100))
    store.touch("a" * 500)[0] = 1.0  # alone over the budget: kept
    assert len(store) == 1
    store.touch("b")[0] = 2.0
    assert list(store.export()) == ["b"]


def _measured(build: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = build()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return size, held


@pytest.mark.parametrize("id_length", [12, 2000])
def test_estimates_track_the_real_allocations(id_length: int) -> None:
    """The fixed costs in core/budget.py are measured, not guessed: within 25% of what
    tracemalloc sees, for short and long ids."""
    n = 20_000 if id_length < 100 else 2_000

    def pending() -> PendingBuffer:
        buf = PendingBuffer(10**9, 1e9)
        for i in range(n):
            buf.put(f"{i:012d}".ljust(id_length, "t"),
                    Decided(0, f"m{i:08d}", float(i), 0.5, array("d", [0.5] * 34)))
        return buf

    size, buf = _measured(pending)
    assert buf.budget.used == pytest.approx(size, rel=0.25)

    def cards() -> StateStore:
        store = StateStore(width=17, ttl_s=1e9, budget=ByteBudget(10**12))
        for i in range(n):
            store.touch(f"{i:012d}".ljust(id_length, "c"))[0] = 1.0
        return store

    size, store = _measured(cards)
    assert store.bytes == pytest.approx(size, rel=0.25)

    pipe = Pipeline(PipelineConfig(early_label_max=10**9, early_label_max_bytes=10**12))
    labels = [Label(f"{i:012d}".ljust(id_length, "e"), "c", True, 1.7e9) for i in range(n)]

    def hold() -> None:
        for label in labels:
            pipe.learn_label(label)

    # The id string and the time's float are the decoded label's, kept by reference once it
    # is gone: count them as the store's.
    kept = sum(49 + len(label.transaction_id) + 24 for label in labels)
    size, _ = _measured(hold)
    assert pipe.early_budget.used == pytest.approx(size + kept, rel=0.25)


def test_budget_gauges_and_drop_counters_start_at_zero_and_follow_the_stores() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    kinds = ("cards", "pending_labels", "early_labels")
    for kind in kinds:
        assert registry.get_sample_value("fraudstream_state_bytes", {"kind": kind}) == 0
        assert registry.get_sample_value("fraudstream_state_budget_drops_total",
                                         {"kind": kind}) == 0
    settings = load_settings(environ={})
    assert (settings.pending_max_bytes, settings.card_state_max_bytes,
            settings.early_label_max_bytes) == (512 * MiB, 512 * MiB, 32 * MiB)
    pipe = Pipeline(PipelineConfig(early_label_max_bytes=MiB))
    counted: dict[str, int] = {}
    for i in range(3):
        pipe.learn_label(Label(f"{i}" + "x" * 600_000, "c", True, 1.7e9))
    pipe.score(_tx(1), 0)
    refresh_budgets(metrics, pipe, counted)
    refresh_budgets(metrics, pipe, counted)  # counts each drop once
    sample = registry.get_sample_value
    assert sample("fraudstream_state_bytes", {"kind": "early_labels"}) == \
        pipe.early_budget.used > 0
    assert sample("fraudstream_state_budget_drops_total", {"kind": "early_labels"}) == 2
    assert sample("fraudstream_state_bytes", {"kind": "cards"}) == pipe.card_budget.used > 0
    assert sample("fraudstream_state_bytes", {"kind": "pending_labels"}) == \
        pipe.pending.budget.used > 0
