"""Fuzzing the changelog rows (issue 13, item 9): whatever transactions and labels a partition
saw (any ids, cards and merchants, repeated ids, contradicting labels, times out of order),
the rows its checkpoints wrote read back into a partition that continues exactly like the
one that never stopped: same scores, same decisions, same duplicates, same label outcomes."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, example, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from keys_support import KEY

from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.state.changelog import RestoredState, encode_changes, fold

T0 = 1_767_225_600.0
ids = st.one_of(st.sampled_from([f"t{i}" for i in range(12)]), st.text(min_size=1, max_size=8))
names = st.one_of(st.sampled_from(["c1", "c2", "m1"]), st.text(min_size=1, max_size=6))
# Event time moves forward by a gap from nothing to two days...
gaps = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2 * 86400.0))
# ... or, out of order, back by up to three days (late input near the TTL's edge).
late_gaps = st.one_of(gaps, st.floats(min_value=-3 * 86400.0, max_value=0.0))


@st.composite
def streams(draw: st.DrawFn, gaps: st.SearchStrategy[float] = gaps
            ) -> list[Transaction | Label]:
    """Transactions, and labels for transactions already seen (a label that overtakes its
    transaction is held in memory only, README "State and delivery", Limits)."""
    out: list[Transaction | Label] = []
    seen: list[Transaction] = []
    now = T0
    for _ in range(draw(st.integers(1, 60))):
        now += draw(gaps)
        if seen and draw(st.integers(0, 3)) == 0:
            tx = draw(st.sampled_from(seen))
            out.append(Label(tx.transaction_id, tx.card_id, draw(st.booleans()), now))
        else:
            tx = Transaction(draw(ids), draw(names), draw(names),
                             draw(st.floats(min_value=0.0, max_value=1e6)), now,
                             draw(st.one_of(st.none(), st.booleans())))
            seen.append(tx)
            out.append(tx)
    return out


configs = st.builds(
    lambda delay, dedupe, corrections: PipelineConfig(
        track_changes=True, state_key=KEY, label_delay_s=delay, evict_every=7, dedupe_max=dedupe,
        dedupe_window_s=3600.0, correction_max=corrections, card_ttl_s=5 * 86400.0),
    st.sampled_from([0.0, 600.0]), st.sampled_from([0, 3, 50]), st.sampled_from([0, 3, 50]))


def _step(pipe: Pipeline, item: Transaction | Label, partition: int) -> Any:
    if isinstance(item, Transaction):
        s = pipe.score(item, partition)
        return (s.score, s.decision, s.duplicate, s.learned)
    return pipe.learn_label(item)


def _tx(card: str, t: float) -> Transaction:
    return Transaction("t0", card, "c1", 0.0, t)


# Found by this test (2026-12-01): a fraud label for a card moved it to the back of the card
# store's eviction order without changing its slot 0 (last transaction time), so the live
# store kept it behind a fresher key past its TTL while the restored one, in slot-0 order,
# evicted it; the card's next transaction then read as a first one.
_T1, _T2, _T3 = T0 + 74_013.0, T0 + 99_105.0, T0 + 432_001.0
@example(items=[_tx("c1", T0), Label("t0", "c1", False, T0), _tx("c2", T0), _tx("c1", T0),
                _tx("0", _T1), Label("t0", "c2", True, _T1), Label("t0", "c1", False, _T1),
                *[_tx("c1", _T1)] * 6, Label("t0", "c1", False, _T1), _tx("c1", _T1),
                _tx("c1", _T1), _tx("c1", _T2), Label("t0", "c1", False, T0 + 265_015.0),
                _tx("c1", _T3), _tx("c2", _T3)],
         config=PipelineConfig(track_changes=True, state_key=KEY, label_delay_s=0.0,
                               evict_every=7, dedupe_max=0, dedupe_window_s=3600.0,
                               correction_max=0, card_ttl_s=5 * 86400.0),
         cut=0.5, every=1)
@fuzz_settings(max_examples=80)
@given(items=streams(), config=configs, cut=st.floats(0.0, 1.0), every=st.integers(1, 9))
def test_a_partition_restored_from_its_rows_continues_exactly(
        items: list[Transaction | Label], config: PipelineConfig, cut: float,
        every: int) -> None:
    _restored_continues(items, config, cut, every)


# Found by this test (2026-12-01): card "m1" first seen 5 days and a second before the
# partition's clock, behind "c1" in the live store's write order; the live store kept it (the
# front key was fresh), the restored one (in time order) evicted it, so its next transaction
# read as known live and as new after the restore.
_L1, _L2 = T0 - 203_920.0, T0 - 432_001.0
@example(items=[_tx("c1", T0), _tx("c1", T0), *[Label("t0", "c1", False, T0)] * 4,
                *[_tx("c1", T0)] * 5, _tx("c1", _L1), _tx("m1", _L2),
                Label("t0", "c1", False, _L2), *[_tx("c1", _L2)] * 5, _tx("m1", _L2),
                Label("t0", "c1", False, _L2), Label("t0", "c1", False, _L2)],
         config=PipelineConfig(track_changes=True, state_key=KEY, label_delay_s=0.0,
                               evict_every=7, dedupe_max=0, dedupe_window_s=3600.0,
                               correction_max=0, card_ttl_s=5 * 86400.0),
         cut=0.75, every=1)
@fuzz_settings(max_examples=150)
@given(items=streams(late_gaps), config=configs, cut=st.floats(0.0, 1.0),
       every=st.integers(1, 9))
def test_a_partition_restored_from_its_rows_continues_exactly_with_late_input(
        items: list[Transaction | Label], config: PipelineConfig, cut: float,
        every: int) -> None:
    """Out of order, the live card store is in arrival order where a restored one is in
    time order, so the two evict different keys at the TTL's edge; a key idle past its TTL
    must read the same whether it was evicted or not."""
    _restored_continues(items, config, cut, every)


def _restored_continues(items: list[Transaction | Label], config: PipelineConfig, cut: float,
                        every: int) -> None:
    straight = Pipeline(config)
    expected = [_step(straight, item, 0) for item in items]
    at = int(len(items) * cut)
    live, restored = Pipeline(config), RestoredState()
    live.assign(0)  # as on assignment: a checkpoint drains assigned partitions only
    for n, item in enumerate(items[:at], start=1):
        _step(live, item, 0)
        if n % every == 0 or n == at:
            for key, value in encode_changes(live.drain_changes(0)):
                fold(restored, key, value)
    # Labels held for a transaction not (or no longer) decided are kept in memory only
    # (README "State and delivery", Limits): the property is about what the changelog holds.
    assume(live.state_sizes()["early_labels"] == 0)
    resumed = Pipeline(config)
    resumed.restore_from_changelog(0, restored)
    assert [_step(resumed, item, 0) for item in items[at:]] == expected[at:]
