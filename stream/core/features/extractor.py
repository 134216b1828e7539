"""Per-card and per-merchant features, computed from state as it was BEFORE each transaction.

(Over 300 lines on purpose: the hot path computes every feature in one function over flat
arrays, the layout and the math explained once here.)

Honest online learning: ``transform_one`` reads state only, and ``extract`` computes the
features first and only then adds the transaction, so a transaction never sees itself. Event
time is the transaction's ``timestamp`` alone, never the wall clock, so a replay of history
produces the same features as live traffic. Merchant risk comes only from labels already
delivered through ``learn_label``, never from the current (or a future) label.

Windows are exponentially decayed (see ``windows.py`` for the math and why): per horizon a
card keeps a decayed count and a decayed amount sum, brought to the event time of the current
transaction from the card's last-update time. That is O(1) memory per horizon, where an exact
30-day sliding window of a busy card would have to keep every one of its events. Late events
(``t`` before the last update) use ``dt = max(0, t - last)``: no negative decay, no NaN.

State layout (one ``array('d')`` per key, slot 0 = last-access event time, see ``store.py``):

- card: ``[last_t, n, mean, m2, merchants, fraud_t, frauds_7d, count_h0, sum_h0, count_h1,
  sum_h1, ...]`` where ``n, mean, m2`` are Welford moments of the amount over the card's whole
  history, ``merchants`` is a 52-bit set of the merchants the card has used (one bit per
  merchant, by CRC-32 of its id: exact in a double, O(1), a few false "seen before" for a card
  with many merchants), and ``frauds_7d`` counts the fraud labels delivered for the card
  (decayed over 7 days from ``fraud_t``);
- merchant: see ``merchant.py`` (activity and fraud-rate windows by label time).

Card spending against its own habit: ``card_recent_vs_long`` is the mean amount of the last
day against the card's long mean (a compromised card spends several times its usual amount
for days), the shortest horizon's count is the burst (card testing), and
``card_merchant_new`` says the card never used this merchant before (a stolen card spends
where its owner never shops).

Amounts are heavy-tailed: ``amount_log``, ``card_seconds_since_prev_log`` and
``merchant_labelled_log`` are log1p-scaled; the decayed means and the ratio keep the formulas
of their names (currency units), so the scoring layer should standardise its inputs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from math import cos, exp, inf, isfinite, log1p, sin, sqrt
from typing import Any, Protocol
from zlib import crc32

from stream.contracts.messages import Transaction
from stream.core.budget import ByteBudget
from stream.core.features import merchant as merchant_state
from stream.core.features.store import StateStore
from stream.core.features.timeofday import DAY_S, NIGHT_END_S, RADIANS_PER_S

__all__ = [
    "DEFAULT_HORIZONS_S",
    "FIRST_SEEN_GAP_S",
    "MAX_AMOUNT",
    "ZSCORE_CLIP",
    "FeatureExtractor",
    "horizon_label",
]

DEFAULT_HORIZONS_S: tuple[float, ...] = (600.0, 3600.0, 86400.0, 604800.0, 2592000.0)
FIRST_SEEN_GAP_S = 365 * 86400.0
"""Stand-in gap for a card never seen: longer than any TTL, so "new" reads as "long idle"."""
ZSCORE_CLIP = 50.0
"""|z| is capped: with two near-equal past amounts the raw z-score of a third can be in the
thousands, which would dominate a linear model's scaling for no extra information."""
MAX_AMOUNT = 1e15
"""Amounts are clamped to [0, MAX_AMOUNT] in the features so squares stay finite (Welford)."""
STATE_FORMAT = 2

_CARD_FIXED = 7  # last_t, n, mean, m2, merchants, fraud_t, frauds_7d
_MERCHANT_WIDTH = merchant_state.WIDTH
_MERCHANT_BITS = 52  # a double holds integers up to 2**53 exactly
_INV_WEEK = 1.0 / (7 * 86400.0)


class MerchantView(Protocol):
    """Where merchant features come from when they are not this extractor's own: the shared
    merchant table (``merchant_table.TableView``), which sees every partition's traffic."""

    def read(self, merchant: str, t: float, out: dict[str, float]) -> None: ...

    def transaction(self, merchant: str, t: float) -> None: ...

    def label(self, merchant: str, is_fraud: bool, t: float) -> None: ...


def horizon_label(seconds: float) -> str:
    """A short name for a horizon: 3600 -> '1h', 86400 -> '1d', 2592000 -> '30d'.

    >>> [horizon_label(s) for s in (90.0, 3600.0, 86400.0, 604800.0, 2592000.0, 1.5)]
    ['90s', '1h', '1d', '7d', '30d', '1.5s']
    """
    for unit, name in ((86400.0, "d"), (3600.0, "h"), (60.0, "m")):
        if seconds >= unit and seconds % unit == 0.0:
            return f"{int(seconds // unit)}{name}"
    return f"{seconds:g}s"


def _clamp_amount(a: float) -> float:
    if a > MAX_AMOUNT:
        return MAX_AMOUNT
    return a if a > 0.0 else 0.0  # negative or NaN (the data layer rejects both anyway)


class FeatureExtractor:
    """Turns a ``Transaction`` into a flat dict of finite floats for an online model.

    Parameters
    ----------
    horizons_s
        Time constants (seconds) of the decayed per-card windows.
    card_ttl_s, merchant_ttl_s
        Event-time idle period after which a card or merchant is forgotten: ``evict``
        frees it, and until then a read or write passed a ``clock`` past its TTL treats it
        as new, so what is read never depends on when eviction ran (a restored store,
        rebuilt in time order, evicts other keys than the live one after late input).
    merchant_prior
        Beta prior ``(a, b)`` of the merchant fraud rate: an unlabelled merchant scores
        ``a / (a + b)`` and the labelled ones shrink towards it.
    track_changes
        Record changed and evicted keys for ``drain_changes`` (the state changelog).

    Examples
    --------
    >>> fx = FeatureExtractor()
    >>> tx = Transaction("t1", card_id="c1", merchant_id="m1", amount=50.0, timestamp=1.7e9)
    >>> f = fx.extract(tx)
    >>> f["card_is_first_seen"], f["card_count_1d"], f["merchant_risk"]
    (1.0, 0.0, 0.01)
    >>> g = fx.extract(Transaction("t2", "c1", "m1", 150.0, timestamp=1.7e9 + 60))
    >>> g["card_is_first_seen"], round(g["card_count_1h"], 4), g["card_mean_amount_1h"]
    (0.0, 0.9835, 50.0)
    >>> fx.learn_label("m1", is_fraud=True, timestamp=1.7e9 + 120)
    >>> round(fx.transform_one(tx)["merchant_risk"], 4)  # (1 + 1) / (1 + 1 + 99)
    0.0198
    >>> len(fx.feature_names) == len(f) and all(math.isfinite(v) for v in f.values())
    True
    """

    def __init__(
        self,
        horizons_s: tuple[float, ...] = DEFAULT_HORIZONS_S,
        card_ttl_s: float = 30 * 86400,
        merchant_ttl_s: float = 90 * 86400,
        merchant_prior: tuple[float, float] = (1.0, 99.0),
        *,
        track_changes: bool = True,
        merchants: MerchantView | None = None,
        card_budget: ByteBudget | None = None,
    ) -> None:
        horizons = tuple(float(h) for h in horizons_s)
        if not horizons or not all(h > 0.0 and math.isfinite(h) for h in horizons):
            raise ValueError(f"horizons_s must be positive finite seconds, got {horizons_s!r}")
        labels = [horizon_label(h) for h in horizons]
        if len(set(labels)) != len(labels):
            raise ValueError(f"horizons_s must be distinct, got {horizons_s!r}")
        prior_a, prior_b = (float(p) for p in merchant_prior)
        if not (prior_a > 0.0 and prior_b > 0.0):
            raise ValueError(f"merchant_prior must be two positive numbers, got {merchant_prior!r}")
        self.horizons_s = horizons
        self.card_ttl_s = float(card_ttl_s)
        self.merchant_ttl_s = float(merchant_ttl_s)
        self.merchant_prior = (prior_a, prior_b)
        self.track_changes = track_changes
        # None: merchants are this extractor's own (the traffic of one partition).
        self.merchants = merchants

        self._prior_num = prior_a
        self._prior_den = prior_a + prior_b
        self._hz = tuple(
            (1.0 / h, f"card_count_{lab}", f"card_mean_amount_{lab}")
            for h, lab in zip(horizons, labels, strict=True)
        )
        longest = max(range(len(horizons)), key=horizons.__getitem__)
        # "Recent" is the last day when it is a horizon, else the shortest one.
        recent = horizons.index(86400.0) if 86400.0 in horizons else min(
            range(len(horizons)), key=horizons.__getitem__)
        self._long_mean_name = self._hz[longest][2]
        self._recent_mean_name = self._hz[recent][2]
        self._ratio_name = f"card_amount_ratio_{labels[longest]}"
        names = ["amount_log"]
        for _, cname, mname in self._hz:
            names += (cname, mname)
        names += [
            self._ratio_name,
            "card_recent_vs_long",
            "card_amount_zscore",
            "card_seconds_since_prev_log",
            "card_is_first_seen",
            "card_merchant_new",
            "card_frauds_7d",
            *merchant_state.FEATURE_NAMES,
            "hour_sin",
            "hour_cos",
            "is_weekend",
            "is_night",
        ]
        self.feature_names: tuple[str, ...] = tuple(names)
        # Card part of the features of a card never seen (the ratio is then overwritten).
        first: dict[str, float] = {}
        for _, cname, mname in self._hz:
            first[cname] = 0.0
            first[mname] = 0.0
        first[self._ratio_name] = 0.0
        first["card_recent_vs_long"] = 1.0
        first["card_amount_zscore"] = 0.0
        first["card_seconds_since_prev_log"] = math.log1p(FIRST_SEEN_GAP_S)
        first["card_is_first_seen"] = 1.0
        first["card_merchant_new"] = 1.0
        first["card_frauds_7d"] = 0.0
        self._first_seen = first

        self._card_width = _CARD_FIXED + 2 * len(horizons)
        # `card_budget`: the byte budget every partition's card store draws on (None: none).
        self._cards = StateStore(self._card_width, self.card_ttl_s, track_changes=track_changes,
                                 budget=card_budget)
        self._merchants = StateStore(
            _MERCHANT_WIDTH, self.merchant_ttl_s, track_changes=track_changes
        )
        # Read-only stand-ins for keys not in the store (never written).
        self._card_zero = array("d", [0.0] * self._card_width)
        self._merchant_zero = array("d", [0.0] * _MERCHANT_WIDTH)

    # ------------------------------------------------------------------ hot path

    def _compute(
        self, tx: Transaction, card: array[float], merch: array[float], write: bool
    ) -> dict[str, float]:
        """Features from ``card``/``merch`` as they are; then, if ``write``, add ``tx`` to them.

        One function for reading and writing so that ``transform_one`` + ``learn_one`` and
        ``extract`` cannot drift apart.
        """
        t = tx.timestamp
        a = tx.amount
        if not 0.0 <= a <= MAX_AMOUNT:
            a = _clamp_amount(a)
        out = {"amount_log": log1p(a)}

        # Card windows, ratio, z-score, recency (state before this transaction).
        bit = 1 << (crc32(tx.merchant_id.encode()) % _MERCHANT_BITS)
        n = card[1]
        if n > 0.0:
            last = card[0]
            dt = t - last
            if dt < 0.0:
                dt = 0.0
            i = _CARD_FIXED
            for inv_h, cname, mname in self._hz:
                f = exp(-dt * inv_h)
                c0 = card[i]  # >= 1 once the card has an event
                s0 = card[i + 1]
                out[cname] = c = c0 * f
                out[mname] = s0 / c0  # decay cancels in the mean: exact even if c underflows
                if write:
                    card[i] = c + 1.0
                    card[i + 1] = s0 * f + a
                i += 2
            long_mean = out[self._long_mean_name]
            out[self._ratio_name] = a / (long_mean + 1.0)
            out["card_recent_vs_long"] = (out[self._recent_mean_name] + 1.0) / (long_mean + 1.0)
            mean = card[2]
            z = 0.0
            if n > 1.0:
                var = card[3] / (n - 1.0)
                if var > 0.0:
                    z = (a - mean) / sqrt(var)
                    if z > ZSCORE_CLIP:
                        z = ZSCORE_CLIP
                    elif z < -ZSCORE_CLIP:
                        z = -ZSCORE_CLIP
            out["card_amount_zscore"] = z
            out["card_seconds_since_prev_log"] = log1p(dt)
            out["card_is_first_seen"] = 0.0
            seen = int(card[4])
            out["card_merchant_new"] = 0.0 if seen & bit else 1.0
            frauds = card[6]
            if frauds > 0.0:
                df = t - card[5]
                if df > 0.0:
                    frauds *= exp(-df * _INV_WEEK)
            out["card_frauds_7d"] = frauds
            if write:
                n += 1.0
                delta = a - mean
                mean += delta / n
                card[1] = n
                card[2] = mean
                card[3] += delta * (a - mean)
                card[4] = float(seen | bit)
                if t > last:
                    card[0] = t
        else:
            out.update(self._first_seen)
            out[self._ratio_name] = a  # a / (0 + 1)
            frauds = card[6]  # labels can precede a card's first transaction on a partition
            if frauds > 0.0:
                df = t - card[5]
                if df > 0.0:
                    frauds *= exp(-df * _INV_WEEK)
                out["card_frauds_7d"] = frauds
            if write:
                card[0] = t
                card[1] = 1.0
                card[2] = a
                card[3] = 0.0
                card[4] = float(bit)
                for i in range(_CARD_FIXED, self._card_width, 2):
                    card[i] = 1.0
                    card[i + 1] = a

        # Merchant: activity from transactions, fraud rates from labels delivered so far.
        view = self.merchants
        if view is None:
            merchant_state.features(merch, t, self.merchant_prior, out)
            if write:
                merchant_state.add_transaction(merch, t)
        else:
            view.read(tx.merchant_id, t, out)
            if write:
                view.transaction(tx.merchant_id, t)

        # Calendar, inlined from timeofday.calendar_features (tested equal) for the hot path.
        day, sod = divmod(t, DAY_S)
        angle = sod * RADIANS_PER_S
        out["hour_sin"] = sin(angle)
        out["hour_cos"] = cos(angle)
        out["is_weekend"] = 1.0 if (int(day) + 3) % 7 >= 5 else 0.0
        out["is_night"] = 1.0 if sod < NIGHT_END_S else 0.0
        return out

    def transform_one(self, tx: Transaction, clock: float = -inf) -> dict[str, float]:
        """Features of ``tx`` from the current state as of ``clock`` (keys idle past their
        TTL then read as new); no side effects."""
        if not isfinite(tx.timestamp):
            raise ValueError(f"transaction {tx.transaction_id!r} has a non-finite timestamp")
        card = self._cards.peek(tx.card_id)
        if card is not None and card[0] < clock - self.card_ttl_s:
            card = None
        merch = None if self.merchants is not None else self._merchants.peek(tx.merchant_id)
        if merch is not None and merch[0] < clock - self.merchant_ttl_s:
            merch = None
        return self._compute(
            tx,
            self._card_zero if card is None else card,
            self._merchant_zero if merch is None else merch,
            False,
        )

    def learn_one(self, tx: Transaction) -> None:
        """Add ``tx`` to its card's windows and its merchant's activity."""
        self.extract(tx)

    def extract(self, tx: Transaction, clock: float = -inf) -> dict[str, float]:
        """``transform_one`` then ``learn_one`` in one pass over the state (the hot path).

        ``clock`` is the partition's clock (the latest event time it processed, never less
        than any ``evict`` time so far): a key idle past its TTL at ``clock`` starts over,
        as if it had been evicted (class docstring).

        >>> fx = FeatureExtractor(card_ttl_s=100.0)
        >>> _ = fx.extract(Transaction("t1", "c1", "m1", 10.0, timestamp=1000.0))
        >>> fx.extract(Transaction("t2", "c1", "m1", 10.0, 1050.0), clock=1200.0)[
        ...     "card_is_first_seen"]  # idle since 1000, past its TTL at 1200: new again
        1.0
        """
        if not isfinite(tx.timestamp):  # before any state is touched
            raise ValueError(f"transaction {tx.transaction_id!r} has a non-finite timestamp")
        t = tx.timestamp
        if self.merchants is not None:
            merch = self._merchant_zero
        else:
            merch = self._merchants.touch(tx.merchant_id, t)
            if merch[0] < clock - self.merchant_ttl_s:
                merch[:] = self._merchant_zero
        card = self._cards.touch(tx.card_id, t)
        if card[0] < clock - self.card_ttl_s:
            card[:] = self._card_zero
        return self._compute(tx, card, merch, True)

    def learn_label(self, merchant_id: str, is_fraud: bool, timestamp: float,
                    card_id: str | None = None, clock: float = -inf) -> None:
        """Count a delivered label in its merchant's windows and, when the card is known and
        the label is fraud, in the card's (affects later transactions only). Keys idle past
        their TTL at ``clock`` start over first (``extract``)."""
        if not isfinite(timestamp):
            raise ValueError(f"label for merchant {merchant_id!r} has a non-finite timestamp")
        if self.merchants is None:
            merch = self._merchants.touch(merchant_id, timestamp)
            if merch[0] < clock - self.merchant_ttl_s:
                merch[:] = self._merchant_zero
            merchant_state.add_label(merch, is_fraud, timestamp)
        else:
            self.merchants.label(merchant_id, is_fraud, timestamp)
        if is_fraud and card_id is not None:
            known = self._cards.peek(card_id)
            if known is not None and known[0] < clock - self.card_ttl_s:
                known = None  # idle past its TTL: as if evicted (reset below)
            # The label moves slot 0 (and the eviction order) only for a card with no
            # transaction yet, as below.
            card = self._cards.touch(
                card_id, timestamp if known is None or known[1] == 0.0 else -inf)
            if known is None:
                card[:] = self._card_zero
            frauds = card[6]
            if frauds > 0.0:
                df = timestamp - card[5]
                if df > 0.0:
                    frauds *= exp(-df * _INV_WEEK)
            if frauds == 0.0 or timestamp > card[5]:
                card[5] = timestamp
            card[6] = frauds + 1.0
            if card[1] == 0.0 and timestamp > card[0]:
                # Slot 0 is the last transaction's time (the windows decay from it); only a
                # card with no transaction yet takes the label's, so the store can age it.
                card[0] = timestamp

    # ------------------------------------------------------------------ memory and state

    def evict(self, now: float) -> int:
        """Forget cards and merchants idle (in event time) at ``now``; return how many.

        O(evicted) amortised, cheap enough to call once per event or per batch.
        """
        return self._cards.evict(now) + self._merchants.evict(now)

    @property
    def n_cards(self) -> int:
        return len(self._cards)

    @property
    def n_merchants(self) -> int:
        return len(self._merchants)

    @property
    def card_store(self) -> StateStore:
        return self._cards

    @property
    def merchant_store(self) -> StateStore:
        return self._merchants

    def drain_changes(
        self,
    ) -> dict[str, tuple[dict[str, list[float]], list[str]]]:
        """Per store (``"cards"``, ``"merchants"``): keys changed since the last drain with
        their state as plain floats, and keys evicted since then (changelog tombstones)."""
        return {
            "cards": self._cards.drain_changes(),
            "merchants": self._merchants.drain_changes(),
        }

    def export_state(self) -> dict[str, Any]:
        """All state as plain data (lists of floats), serialisable with orjson."""
        return {
            "format": STATE_FORMAT,
            "horizons_s": list(self.horizons_s),
            "cards": self._cards.export(),
            "merchants": self._merchants.export(),
        }

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace all state with an ``export_state`` result (e.g. after orjson round trip).

        Refuses state built with other horizons: its numbers would mean something else.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported feature state format {state.get('format')!r}")
        horizons = tuple(float(h) for h in state.get("horizons_s", ()))
        if horizons != self.horizons_s:
            raise ValueError(
                f"state was built with horizons {horizons!r}, this extractor uses "
                f"{self.horizons_s!r}"
            )
        self._cards.clear()
        self._merchants.clear()
        self._cards.restore_all(state.get("cards", {}))
        self._merchants.restore_all(state.get("merchants", {}))
