"""Fuzzing the data layer (issue 13, item 9): whatever bytes arrive, the codec returns a
message or raises a DecodeError with a known reason, which becomes one dead letter whose
payload is the original bytes. Never another exception: that would stop the scorer."""

from __future__ import annotations

import base64

import orjson
from fuzz_support import NOW_MS, finite, near_valid
from hypothesis import given
from hypothesis import strategies as st

from stream.contracts.codec import (
    REASONS,
    DecodeError,
    TimeBounds,
    decode_label,
    decode_transaction,
    encode_dead_letter,
    encode_verdict,
)
from stream.contracts.messages import DeadLetter, Label, SourceRef, Transaction, Verdict
from stream.core.pipeline import Scored
from stream.core.verdicts import to_verdict, verdict_bytes

BOUNDS = TimeBounds(ahead_s=7 * 86400.0, behind_s=3650 * 86400.0)
payloads = st.one_of(st.none(), st.binary(max_size=300), near_valid(), near_valid("label"))
record_times = st.one_of(st.just(0), st.just(NOW_MS), st.integers(-(2**40), 2**45))


def _outcome(decode: object, raw: bytes | None, record_ms: int) -> Transaction | Label | str:
    """The message, or the reason of the DecodeError; any other exception fails the test."""
    try:
        return decode(raw, BOUNDS, record_ms, NOW_MS / 1000.0)  # type: ignore[operator]
    except DecodeError as exc:
        assert exc.reason in REASONS, exc.reason
        return exc.reason


def _dead_letter_keeps(raw: bytes | None, reason: str) -> None:
    letter = DeadLetter(reason, "why", SourceRef("transactions", 0, 7), raw, b"k", ())
    body = orjson.loads(encode_dead_letter(letter))
    assert body["reason"] == reason and body["source"]["offset"] == 7
    if raw is None:
        assert body["payload"] is None
    elif "payload" in body:
        assert body["payload"].encode("utf-8") == raw
    else:
        assert base64.b64decode(body["payload_b64"]) == raw


@given(raw=payloads, record_ms=record_times)
def test_any_transaction_bytes_become_a_transaction_or_one_dead_letter(
        raw: bytes | None, record_ms: int) -> None:
    out = _outcome(decode_transaction, raw, record_ms)
    if isinstance(out, str):
        _dead_letter_keeps(raw, out)
        return
    assert isinstance(out, Transaction)
    assert all(isinstance(v, str) and v for v in (out.transaction_id, out.card_id,
                                                  out.merchant_id))
    assert finite(out.amount) and out.amount >= 0 and finite(out.timestamp)
    assert out.timestamp <= NOW_MS / 1000.0 + BOUNDS.ahead_s  # no clock moved past the skew
    verdict = Verdict(out.transaction_id, out.card_id, 0.5, "approve", "m", "t", 0.1)
    assert orjson.loads(encode_verdict(verdict))["transaction_id"] == out.transaction_id


@given(raw=payloads, record_ms=record_times)
def test_any_label_bytes_become_a_label_or_one_dead_letter(
        raw: bytes | None, record_ms: int) -> None:
    out = _outcome(decode_label, raw, record_ms)
    if isinstance(out, str):
        _dead_letter_keeps(raw, out)
        return
    assert isinstance(out, Label)
    assert out.transaction_id and out.card_id and isinstance(out.is_fraud, bool)
    assert finite(out.timestamp)


@given(raw=near_valid())
def test_decoding_does_not_depend_on_the_bounds_for_anything_but_time(raw: bytes) -> None:
    """Without bounds, only the time check is skipped: an event the bounded decoder accepts
    is accepted unbounded too, as the same transaction."""
    bounded = _outcome(decode_transaction, raw, NOW_MS)
    try:
        free: Transaction | str = decode_transaction(raw)
    except DecodeError as exc:
        free = exc.reason
    if isinstance(bounded, Transaction):
        assert free == bounded
    elif bounded != "timestamp_out_of_range":
        assert free == bounded


numbers = st.floats(allow_nan=False, allow_infinity=False)
scores = st.dictionaries(st.text(max_size=12), numbers, max_size=4)


@given(st.text(max_size=20), st.text(max_size=20), numbers,
       st.sampled_from(["approve", "review", "decline"]), st.sampled_from(["ready", "warming"]),
       scores, scores, st.floats(0, 2e9), st.floats(0, 1e7))
def test_the_scorers_verdict_bytes_are_the_verdicts_encoding(
        tx_id: str, card: str, score: float, decision: str, state: str,
        contributions: dict[str, float], challengers: dict[str, float], now_s: float,
        latency_ms: float) -> None:
    # The live scorer encodes without building a Verdict (core/verdicts.py): the wire form
    # must be exactly the contract's, whatever the fields hold.
    tx = Transaction(tx_id, card, "m", 1.0, 1_767_225_600.0)
    scored = Scored(score, decision, contributions, 0,  # type: ignore[arg-type]
                    challengers=challengers, model_state=state)  # type: ignore[arg-type]
    assert verdict_bytes(tx, scored, "lr@1", now_s, latency_ms) == encode_verdict(
        to_verdict(tx, scored, "lr@1", now_s, latency_ms))
