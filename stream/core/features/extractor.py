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

- card: ``[last_t, n, mean, m2, count_h0, sum_h0, count_h1, sum_h1, ...]`` where ``n, mean,
  m2`` are Welford moments of the amount over the card's whole history;
- merchant: ``[last_seen, last_tx_t, count_1d, n_fraud, n_labelled]``.

Amounts are heavy-tailed: ``amount_log``, ``card_seconds_since_prev_log`` and
``merchant_labelled_log`` are log1p-scaled; the decayed means and the ratio keep the formulas
of their names (currency units), so the scoring layer should standardise its inputs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from math import cos, exp, isfinite, log1p, sin, sqrt
from typing import Any

from stream.contracts.messages import Transaction
from stream.core.features.store import StateStore
from stream.core.features.timeofday import DAY_S, NIGHT_END_S, RADIANS_PER_S

__all__ = [
    "DEFAULT_HORIZONS_S",
    "FIRST_SEEN_GAP_S",
    "MAX_AMOUNT",
    "MERCHANT_ACTIVITY_HORIZON_S",
    "ZSCORE_CLIP",
    "FeatureExtractor",
    "horizon_label",
]

DEFAULT_HORIZONS_S: tuple[float, ...] = (3600.0, 86400.0, 604800.0, 2592000.0)
MERCHANT_ACTIVITY_HORIZON_S = 86400.0
FIRST_SEEN_GAP_S = 365 * 86400.0
"""Stand-in gap for a card never seen: longer than any TTL, so "new" reads as "long idle"."""
ZSCORE_CLIP = 50.0
"""|z| is capped: with two near-equal past amounts the raw z-score of a third can be in the
thousands, which would dominate a linear model's scaling for no extra information."""
MAX_AMOUNT = 1e15
"""Amounts are clamped to [0, MAX_AMOUNT] in the features so squares stay finite (Welford)."""
STATE_FORMAT = 1

_CARD_FIXED = 4  # last_t, n, mean, m2
_MERCHANT_WIDTH = 5


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
        Event-time idle period after which ``evict`` forgets a card or merchant.
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

        self._prior_num = prior_a
        self._prior_den = prior_a + prior_b
        self._inv_merchant_h = 1.0 / MERCHANT_ACTIVITY_HORIZON_S
        self._hz = tuple(
            (1.0 / h, f"card_count_{lab}", f"card_mean_amount_{lab}")
            for h, lab in zip(horizons, labels, strict=True)
        )
        longest = max(range(len(horizons)), key=horizons.__getitem__)
        self._long_mean_name = self._hz[longest][2]
        self._ratio_name = f"card_amount_ratio_{labels[longest]}"
        names = ["amount_log"]
        for _, cname, mname in self._hz:
            names += (cname, mname)
        names += [
            self._ratio_name,
            "card_amount_zscore",
            "card_seconds_since_prev_log",
            "card_is_first_seen",
            "merchant_risk",
            "merchant_labelled_log",
            "merchant_count_1d",
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
        first["card_amount_zscore"] = 0.0
        first["card_seconds_since_prev_log"] = math.log1p(FIRST_SEEN_GAP_S)
        first["card_is_first_seen"] = 1.0
        self._first_seen = first

        self._card_width = _CARD_FIXED + 2 * len(horizons)
        self._cards = StateStore(self._card_width, self.card_ttl_s, track_changes=track_changes)
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
            out[self._ratio_name] = a / (out[self._long_mean_name] + 1.0)
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
            if write:
                n += 1.0
                delta = a - mean
                mean += delta / n
                card[1] = n
                card[2] = mean
                card[3] += delta * (a - mean)
                if t > last:
                    card[0] = t
        else:
            out.update(self._first_seen)
            out[self._ratio_name] = a  # a / (0 + 1)
            if write:
                card[0] = t
                card[1] = 1.0
                card[2] = a
                card[3] = 0.0
                for i in range(_CARD_FIXED, self._card_width, 2):
                    card[i] = 1.0
                    card[i + 1] = a

        # Merchant: risk from labels delivered so far; activity from transactions.
        cm = merch[2]
        if cm > 0.0:
            dtm = t - merch[1]
            if dtm > 0.0:
                cm *= exp(-dtm * self._inv_merchant_h)
        labelled = merch[4]
        out["merchant_risk"] = (merch[3] + self._prior_num) / (labelled + self._prior_den)
        out["merchant_labelled_log"] = log1p(labelled)
        out["merchant_count_1d"] = cm
        if write:
            if merch[2] == 0.0 or t > merch[1]:
                merch[1] = t
            merch[2] = cm + 1.0
            if t > merch[0]:
                merch[0] = t

        # Calendar, inlined from timeofday.calendar_features (tested equal) for the hot path.
        day, sod = divmod(t, DAY_S)
        angle = sod * RADIANS_PER_S
        out["hour_sin"] = sin(angle)
        out["hour_cos"] = cos(angle)
        out["is_weekend"] = 1.0 if (int(day) + 3) % 7 >= 5 else 0.0
        out["is_night"] = 1.0 if sod < NIGHT_END_S else 0.0
        return out

    def transform_one(self, tx: Transaction) -> dict[str, float]:
        """Features of ``tx`` from the current state; no side effects."""
        if not isfinite(tx.timestamp):
            raise ValueError(f"transaction {tx.transaction_id!r} has a non-finite timestamp")
        card = self._cards.peek(tx.card_id)
        merch = self._merchants.peek(tx.merchant_id)
        return self._compute(
            tx,
            self._card_zero if card is None else card,
            self._merchant_zero if merch is None else merch,
            False,
        )

    def learn_one(self, tx: Transaction) -> None:
        """Add ``tx`` to its card's windows and its merchant's activity."""
        self.extract(tx)

    def extract(self, tx: Transaction) -> dict[str, float]:
        """``transform_one`` then ``learn_one`` in one pass over the state (the hot path)."""
        if not isfinite(tx.timestamp):  # before any state is touched
            raise ValueError(f"transaction {tx.transaction_id!r} has a non-finite timestamp")
        return self._compute(
            tx, self._cards.touch(tx.card_id), self._merchants.touch(tx.merchant_id), True
        )

    def learn_label(self, merchant_id: str, is_fraud: bool, timestamp: float) -> None:
        """Count a delivered label in its merchant's risk (affects later transactions only)."""
        if not isfinite(timestamp):
            raise ValueError(f"label for merchant {merchant_id!r} has a non-finite timestamp")
        merch = self._merchants.touch(merchant_id)
        if is_fraud:
            merch[3] += 1.0
        merch[4] += 1.0
        if timestamp > merch[0]:
            merch[0] = timestamp

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
