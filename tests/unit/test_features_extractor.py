"""FeatureExtractor against a batch recomputation over the same events, and its guarantees:
state read before update, labels only from the past, eviction, finite values, round trip."""

from __future__ import annotations

import math
import random
import statistics
import zlib
from collections import defaultdict

import orjson
import pytest

from stream.contracts.messages import Transaction
from stream.core.features.extractor import (
    DEFAULT_HORIZONS_S,
    FIRST_SEEN_GAP_S,
    ZSCORE_CLIP,
    FeatureExtractor,
)
from stream.core.features.timeofday import calendar_features

T0 = 1.7e9
LABELS = ("10m", "1h", "1d", "7d", "30d")
DAY = 86400.0


def _bit(merchant: str) -> int:
    """The card's merchant sketch: one of 52 bits per merchant, by CRC-32 of its id."""
    return 1 << (zlib.crc32(merchant.encode()) % 52)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _stream(seed: int, n: int, n_cards: int, jitter: float = 0.0) -> list[Transaction]:
    """Random events; gaps mix seconds, hours and days. ``jitter`` > 0 makes some late."""
    rng = random.Random(seed)
    t = T0
    out = []
    for i in range(n):
        t += rng.expovariate(1.0 / rng.choice([2.0, 900.0, 7200.0, 40000.0]))
        ts = t - rng.uniform(0.0, jitter) if jitter and rng.random() < 0.3 else t
        out.append(
            Transaction(
                transaction_id=f"tx{i}",
                card_id=f"c{rng.randrange(n_cards)}",
                merchant_id=f"m{rng.randrange(max(1, n_cards // 3))}",
                amount=round(rng.lognormvariate(3.5, 1.3), 2),
                timestamp=ts,
            )
        )
    return out


def _batch_expected(txs: list[Transaction]) -> list[dict[str, float]]:
    """Recompute every card/merchant feature from the full list of earlier events.

    Late events count as happening at the entity's latest time so far (dt = max(0, t - last)),
    so effective times are the running maximum per entity.
    """
    card_hist: dict[str, list[tuple[float, float]]] = defaultdict(list)
    card_merchants: dict[str, int] = defaultdict(int)
    merch_hist: dict[str, list[float]] = defaultdict(list)
    expected = []
    for tx in txs:
        prev = card_hist[tx.card_id]
        e: dict[str, float] = {"amount_log": math.log1p(tx.amount)}
        if prev:
            last = max(ti for ti, _ in prev)
            tref = max(tx.timestamp, last)
            for h, lab in zip(DEFAULT_HORIZONS_S, LABELS, strict=True):
                e[f"card_count_{lab}"] = sum(math.exp(-(tref - ti) / h) for ti, _ in prev)
                # The mean's weights relative to the newest event (the rest of the decay
                # cancels), so no weight underflows however long the card was idle.
                w = [math.exp(-(last - ti) / h) for ti, _ in prev]
                s = sum(wi * ai for wi, (_, ai) in zip(w, prev, strict=True))
                e[f"card_mean_amount_{lab}"] = s / sum(w)
            e["card_seconds_since_prev_log"] = math.log1p(tref - last)
            e["card_is_first_seen"] = 0.0
            amounts = [ai for _, ai in prev]
            z = 0.0
            if len(amounts) >= 2 and statistics.stdev(amounts) > 0:
                z = (tx.amount - statistics.fmean(amounts)) / statistics.stdev(amounts)
                z = max(-ZSCORE_CLIP, min(ZSCORE_CLIP, z))
            e["card_amount_zscore"] = z
            seen = card_merchants[tx.card_id] & _bit(tx.merchant_id)
            e["card_merchant_new"] = 0.0 if seen else 1.0
            e["card_recent_vs_long"] = ((e["card_mean_amount_1d"] + 1.0)
                                        / (e["card_mean_amount_30d"] + 1.0))
        else:
            tref = tx.timestamp
            e["card_merchant_new"] = 1.0
            e["card_recent_vs_long"] = 1.0
            for lab in LABELS:
                e[f"card_count_{lab}"] = 0.0
                e[f"card_mean_amount_{lab}"] = 0.0
            e["card_seconds_since_prev_log"] = math.log1p(FIRST_SEEN_GAP_S)
            e["card_is_first_seen"] = 1.0
            e["card_amount_zscore"] = 0.0
        e["card_amount_ratio_30d"] = tx.amount / (e["card_mean_amount_30d"] + 1.0)
        mprev = merch_hist[tx.merchant_id]
        mref = max([tx.timestamp, *mprev])
        e["merchant_count_1d"] = sum(math.exp(-(mref - ti) / DAY) for ti in mprev)
        e["merchant_count_7d"] = sum(math.exp(-(mref - ti) / (7 * DAY)) for ti in mprev)
        e["merchant_activity_ratio"] = e["merchant_count_1d"] / (e["merchant_count_7d"] / 7 + 1)
        e["card_frauds_7d"] = 0.0
        expected.append(e)
        prev.append((tref, tx.amount))
        card_merchants[tx.card_id] |= _bit(tx.merchant_id)
        mprev.append(mref)
    return expected


def _assert_matches(got: dict[str, float], want: dict[str, float], where: str) -> None:
    for name, value in want.items():
        if name == "card_amount_zscore":  # z of a near-mean amount: compare absolutely too
            ok = math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9)
        else:
            ok = _close(got[name], value)
        assert ok, f"{where}: {name} = {got[name]!r}, batch says {value!r}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_windowed_features_match_batch_recomputation(seed: int) -> None:
    txs = _stream(seed, n=3000, n_cards=25)
    fx = FeatureExtractor()
    for i, (tx, want) in enumerate(zip(txs, _batch_expected(txs), strict=True)):
        _assert_matches(fx.extract(tx), want, f"event {i}")


def test_out_of_order_events_are_finite_and_match_running_max_batch() -> None:
    txs = _stream(9, n=3000, n_cards=20, jitter=20000.0)
    assert any(b.timestamp < a.timestamp for a, b in zip(txs, txs[1:], strict=False))
    fx = FeatureExtractor()
    for i, (tx, want) in enumerate(zip(txs, _batch_expected(txs), strict=True)):
        got = fx.extract(tx)
        assert all(math.isfinite(v) for v in got.values())
        assert got["card_seconds_since_prev_log"] >= 0.0
        _assert_matches(got, want, f"event {i}")


def test_first_transaction_of_a_card_sees_no_history() -> None:
    fx = FeatureExtractor()
    f = fx.extract(Transaction("t1", "c1", "m1", 80.0, T0))
    assert f["card_is_first_seen"] == 1.0
    assert all(f[f"card_count_{lab}"] == 0.0 for lab in LABELS)
    assert all(f[f"card_mean_amount_{lab}"] == 0.0 for lab in LABELS)
    assert f["card_amount_zscore"] == 0.0
    assert f["card_amount_ratio_30d"] == 80.0
    assert f["merchant_count_1d"] == 0.0
    g = fx.extract(Transaction("t2", "c1", "m1", 500.0, T0))
    assert g["card_is_first_seen"] == 0.0
    assert g["card_count_1h"] == 1.0 and g["card_mean_amount_1h"] == 80.0  # not 500
    assert g["card_seconds_since_prev_log"] == 0.0
    assert g["merchant_count_1d"] == 1.0


def test_own_amount_never_in_own_history_features() -> None:
    history = _stream(4, n=300, n_cards=3)
    history_only = {"amount_log", "card_amount_ratio_30d", "card_amount_zscore"}
    results = []
    for amount in (1.0, 12345.0):
        fx = FeatureExtractor()
        for tx in history:
            fx.extract(tx)
        probe = Transaction("p", history[-1].card_id, "m0", amount, history[-1].timestamp + 60)
        results.append(fx.extract(probe))
    for name in results[0]:
        if name not in history_only:
            assert results[0][name] == results[1][name], name


def test_transform_one_has_no_side_effects_and_extract_equals_transform_then_learn() -> None:
    txs = _stream(5, n=2000, n_cards=30, jitter=5000.0)
    a, b = FeatureExtractor(), FeatureExtractor()
    for tx in txs:
        before = a.export_state()
        a.drain_changes()
        fa = a.transform_one(tx)
        assert a.export_state() == before
        assert a.drain_changes() == {"cards": ({}, []), "merchants": ({}, [])}
        a.learn_one(tx)
        assert b.extract(tx) == fa
    assert a.export_state() == b.export_state()


def test_merchant_risk_uses_only_labels_already_received() -> None:
    fx = FeatureExtractor(merchant_prior=(1.0, 9.0))
    tx = Transaction("t1", "c1", "m1", 10.0, T0, is_fraud=True)
    f = fx.extract(tx)
    assert f["merchant_risk"] == 0.1  # the prior: the event's own label is never used
    assert f["merchant_labelled_log"] == 0.0
    assert fx.transform_one(tx)["merchant_risk"] == 0.1  # still: no label delivered yet
    fx.learn_label("m1", is_fraud=True, timestamp=T0 + 86400)
    g = fx.transform_one(tx)
    assert g["merchant_risk"] == 2.0 / 11.0
    assert g["merchant_labelled_log"] == math.log1p(1.0)
    fx.learn_label("m1", is_fraud=False, timestamp=T0 + 86500)
    assert fx.transform_one(tx)["merchant_risk"] == 2.0 / 12.0
    other = fx.transform_one(Transaction("t2", "c1", "m_never_seen", 10.0, T0))
    assert other["merchant_risk"] == 0.1 and other["merchant_count_1d"] == 0.0


def test_merchant_risk_matches_batch_of_earlier_labels() -> None:
    rng = random.Random(8)
    fx = FeatureExtractor()
    labels: dict[str, list[bool]] = defaultdict(list)
    for i in range(3000):
        m = f"m{rng.randrange(10)}"
        if rng.random() < 0.5:
            fraud = rng.random() < 0.1
            fx.learn_label(m, fraud, T0 + i)
            labels[m].append(fraud)
        else:
            f = fx.extract(Transaction(f"t{i}", f"c{i % 50}", m, 5.0, T0 + i))
            n, k = len(labels[m]), sum(labels[m])
            assert _close(f["merchant_risk"], (k + 1.0) / (n + 100.0))
            assert _close(f["merchant_labelled_log"], math.log1p(n))


def test_merchant_fraud_rate_windows_match_batch_of_earlier_labels() -> None:
    """Windows over label time: each delivered label weighs exp(-age / h), shrunk to the
    prior; a label delivered after the decision is never in it."""
    rng = random.Random(18)
    fx = FeatureExtractor()
    delivered: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    t = T0
    for i in range(4000):
        t += rng.expovariate(1.0 / rng.choice([60.0, 3600.0, DAY]))
        m = f"m{rng.randrange(6)}"
        if rng.random() < 0.4:
            fraud = rng.random() < 0.2
            fx.learn_label(m, fraud, t)
            delivered[m].append((t, fraud))
            continue
        f = fx.extract(Transaction(f"t{i}", f"c{i % 40}", m, 5.0, t))
        frauds7 = 0.0
        for h, name in ((DAY, "1d"), (7 * DAY, "7d"), (30 * DAY, "30d")):
            w = [(math.exp(-(t - tl) / h), fr) for tl, fr in delivered[m]]
            frauds = sum(wi for wi, fr in w if fr)
            labels = sum(wi for wi, _ in w)
            want = (frauds + 1.0) / (labels + 100.0)
            got = f[f"merchant_fraud_rate_{name}"]
            assert math.isclose(got, want, rel_tol=1e-9), (i, name, got, want)
            if name == "7d":
                frauds7 = frauds
        assert math.isclose(f["merchant_frauds_7d_log"], math.log1p(frauds7), rel_tol=1e-9,
                            abs_tol=1e-12)


def test_card_frauds_count_delivered_fraud_labels_of_the_card_only() -> None:
    fx = FeatureExtractor()
    fx.extract(Transaction("t1", "c1", "m1", 10.0, T0))
    fx.learn_label("m1", True, T0 + DAY, card_id="c1")
    fx.learn_label("m1", False, T0 + DAY, card_id="c1")  # legitimate: not counted
    fx.learn_label("m1", True, T0 + DAY, card_id=None)  # card unknown: merchant only
    f = fx.extract(Transaction("t2", "c1", "m1", 10.0, T0 + 8 * DAY))
    assert math.isclose(f["card_frauds_7d"], math.exp(-1.0))
    assert f["card_seconds_since_prev_log"] == math.log1p(8 * DAY)  # the label is not a tx
    assert fx.extract(Transaction("t3", "c2", "m1", 10.0, T0 + 8 * DAY))["card_frauds_7d"] == 0
    # A label can come before the card's first transaction on this partition.
    fx.learn_label("m9", True, T0, card_id="c3")
    g = fx.extract(Transaction("t4", "c3", "m9", 10.0, T0 + 7 * DAY))
    assert g["card_is_first_seen"] == 1.0 and math.isclose(g["card_frauds_7d"], math.exp(-1.0))


def test_card_merchant_new_follows_the_cards_own_merchants() -> None:
    fx = FeatureExtractor()
    assert fx.extract(Transaction("t1", "c1", "m1", 1.0, T0))["card_merchant_new"] == 1.0
    assert fx.extract(Transaction("t2", "c1", "m1", 1.0, T0 + 1))["card_merchant_new"] == 0.0
    other = next(f"m{i}" for i in range(2, 100) if _bit(f"m{i}") != _bit("m1"))
    assert fx.extract(Transaction("t3", "c1", other, 1.0, T0 + 2))["card_merchant_new"] == 1.0
    assert fx.extract(Transaction("t4", "c2", "m1", 1.0, T0 + 3))["card_merchant_new"] == 1.0


def test_idle_cards_and_merchants_are_evicted_and_memory_stays_bounded() -> None:
    day = 86400.0
    fx = FeatureExtractor(card_ttl_s=day, merchant_ttl_s=2 * day)
    step = 10.0  # 100k distinct cards over ~11.6 days of event time
    for i in range(100_000):
        t = T0 + i * step
        fx.extract(Transaction(f"t{i}", f"card{i}", f"m{i // 1000}", 1.0, t))
        fx.evict(t)
        assert fx.n_cards <= day / step + 1
    assert fx.n_merchants <= 2 * day / (1000 * step) + 2
    changes = fx.drain_changes()
    cards_changed, cards_evicted = changes["cards"]
    assert len(cards_evicted) == 100_000 - fx.n_cards
    assert set(cards_changed) == set(fx.card_store.export())
    assert "card0" in cards_evicted and "card0" not in cards_changed
    assert changes["merchants"][1]  # idle merchants were reported too
    # An evicted card comes back as new.
    f = fx.extract(Transaction("x", "card0", "m0", 1.0, T0 + 100_000 * step))
    assert f["card_is_first_seen"] == 1.0


def test_labels_keep_a_merchant_alive() -> None:
    fx = FeatureExtractor(merchant_ttl_s=100.0)
    fx.extract(Transaction("t", "c", "m", 1.0, T0))
    fx.learn_label("m", True, T0 + 90.0)
    assert fx.evict(T0 + 150.0) == 0  # card ttl is 30 days; merchant seen at T0 + 90
    assert fx.evict(T0 + 191.0) == 1
    assert fx.n_merchants == 0


def test_extreme_inputs_give_finite_features() -> None:
    fx = FeatureExtractor()
    cases = [
        (0.0, T0),
        (1e300, T0),  # clamped
        (5.0, T0),
        (5.0, T0 - 1e6),  # far in the past
        (float("inf"), T0 + 1.0),
        (float("nan"), T0 + 2.0),
        (-3.0, T0 + 3.0),
        (7.0, T0 + 1e9),  # decades idle (no eviction called)
        (7.0, T0 + 1e9),
        (7.0, T0 + 1e9),
    ]
    for i, (amount, t) in enumerate(cases):
        tx = Transaction(f"t{i}", "c", "m", amount, t)
        for f in (fx.transform_one(tx), fx.extract(tx)):
            assert all(isinstance(v, float) and math.isfinite(v) for v in f.values()), f
    constant = FeatureExtractor()
    for i in range(5):
        f = constant.extract(Transaction(f"k{i}", "c", "m", 42.0, T0 + i))
    assert f["card_amount_zscore"] == 0.0  # no spread: no z-score
    before = fx.export_state()
    for bad_t in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            fx.extract(Transaction("bad", "c_new", "m_new", 1.0, bad_t))
        with pytest.raises(ValueError):
            fx.transform_one(Transaction("bad", "c", "m", 1.0, bad_t))
    assert fx.export_state() == before  # a rejected event leaves no trace
    with pytest.raises(ValueError):
        fx.learn_label("m", True, float("inf"))


def test_calendar_features_in_extract_equal_the_calendar_module() -> None:
    rng = random.Random(12)
    fx = FeatureExtractor()
    for i in range(2000):
        t = rng.uniform(0.0, 4e9)
        f = fx.extract(Transaction(f"t{i}", f"c{i % 7}", "m", 1.0, t))
        assert (f["hour_sin"], f["hour_cos"], f["is_weekend"], f["is_night"]) == (
            calendar_features(t)
        )
    saturday_3am = fx.transform_one(Transaction("s", "c", "m", 1.0, 1_704_510_000.0))
    assert (saturday_3am["is_weekend"], saturday_3am["is_night"]) == (1.0, 1.0)


def test_feature_names_are_stable_and_complete() -> None:
    fx = FeatureExtractor()
    expected: tuple[str, ...] = ("amount_log",)
    for lab in LABELS:
        expected += (f"card_count_{lab}", f"card_mean_amount_{lab}")
    expected += (
        "card_amount_ratio_30d",
        "card_recent_vs_long",
        "card_amount_zscore",
        "card_seconds_since_prev_log",
        "card_is_first_seen",
        "card_merchant_new",
        "card_frauds_7d",
        "merchant_risk",
        "merchant_labelled_log",
        "merchant_count_1d",
        "merchant_count_7d",
        "merchant_activity_ratio",
        "merchant_fraud_rate_1d",
        "merchant_fraud_rate_7d",
        "merchant_fraud_rate_30d",
        "merchant_frauds_7d_log",
        "hour_sin",
        "hour_cos",
        "is_weekend",
        "is_night",
    )
    assert fx.feature_names == expected
    tx = Transaction("t", "c", "m", 3.0, T0)
    assert tuple(fx.transform_one(tx)) == expected
    assert tuple(fx.extract(tx)) == expected
    assert tuple(fx.extract(tx)) == expected
    custom = FeatureExtractor(horizons_s=(600.0, 7200.0))
    assert "card_count_10m" in custom.feature_names
    assert "card_amount_ratio_2h" in custom.feature_names
    assert tuple(custom.extract(tx)) == custom.feature_names


def test_invalid_parameters_are_rejected() -> None:
    for kwargs in (
        {"horizons_s": ()},
        {"horizons_s": (0.0,)},
        {"horizons_s": (3600.0, 3600.0)},
        {"merchant_prior": (0.0, 1.0)},
    ):
        with pytest.raises(ValueError):
            FeatureExtractor(**kwargs)  # type: ignore[arg-type]


def test_export_import_round_trip_through_orjson_gives_identical_features() -> None:
    txs = _stream(6, n=4000, n_cards=40, jitter=1000.0)
    head, tail = txs[:2500], txs[2500:]
    original = FeatureExtractor(card_ttl_s=5 * 86400.0)
    for i, tx in enumerate(head):
        original.extract(tx)
        if i % 100 == 0:
            original.learn_label(tx.merchant_id, i % 300 == 0, tx.timestamp)
    blob = orjson.dumps(original.export_state())
    restored = FeatureExtractor(card_ttl_s=5 * 86400.0)
    restored.import_state(orjson.loads(blob))
    assert restored.export_state() == original.export_state()
    assert (restored.n_cards, restored.n_merchants) == (original.n_cards, original.n_merchants)
    for tx in tail:
        assert restored.extract(tx) == original.extract(tx)
        assert restored.evict(tx.timestamp) == original.evict(tx.timestamp)


def test_import_rejects_foreign_state() -> None:
    state = FeatureExtractor().export_state()
    with pytest.raises(ValueError):
        FeatureExtractor(horizons_s=(3600.0,)).import_state(state)
    with pytest.raises(ValueError):
        FeatureExtractor().import_state({**state, "format": 99})
    bad = {**state, "cards": {"c": [1.0, 2.0]}}
    with pytest.raises(ValueError):
        FeatureExtractor().import_state(bad)
