"""Bytes <-> messages, following the contracts in topics/*.schema.json.

Validation is written out by hand instead of running jsonschema per record: the hot
path decodes every event, and a generic validator costs more than the whole model.
`tests/unit/test_codec.py` checks that this code and the JSON Schemas agree on a corpus of
good and bad messages, so the two cannot drift apart silently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream.contracts.messages import DeadLetter, Label, Transaction, Verdict
from stream.errors import FraudStreamError

_TX_STRINGS = ("transaction_id", "card_id", "merchant_id")
_TX_KNOWN = frozenset((*_TX_STRINGS, "amount", "timestamp", "is_fraud", "currency"))
# Epoch milliseconds beyond year 9999 cannot be a real event time.
_MAX_EPOCH_MS = 253_402_300_799_999


# Every reason code a dead letter can carry (README "Topics"): the metrics start each one at
# zero, so an alert on the first dead letter of a kind has a series to compare against.
REASONS = ("invalid_json", "not_an_object", "missing_field", "invalid_type", "invalid_amount",
           "invalid_timestamp", "timestamp_out_of_range", "invalid_label", "field_too_long",
           "output_too_large", "processing_error")
# The default `max_field_length` (Settings): the longest transaction_id, card_id, merchant_id
# or currency accepted, in characters (as JSON Schema's maxLength counts them).
MAX_FIELD_LENGTH = 256
# A dead letter's `error` text is cut to this many characters (it may quote the bad value).
_MAX_ERROR_CHARS = 1000
# Epoch milliseconds below this are before 1973-03-03: read as seconds, the same digits are a
# date of this century, so such a number is epoch seconds sent where milliseconds belong.
_SECONDS_AS_MS_BELOW = 100_000_000_000


class DecodeError(FraudStreamError, ValueError):
    """A record that breaks the contract; `reason` is the short code put on the dead letter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range for a double")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_big_numbers(raw: bytes, orjson_error: orjson.JSONDecodeError) -> Any:
    """The standard json module, for a value orjson refused for a number alone.

    orjson reads integers into 64 bits or a double, and refuses one beyond a double's range,
    although JSON (and the schema, for extra fields) allows any integer. Python's own parser
    reads it exactly, up to its 4,300-digit limit for integers (`sys.int_info`). It is held to
    orjson's rules otherwise: UTF-8 only, no NaN or Infinity, non-integer numbers must fit a
    double, and no lone surrogates (orjson could not write such text back).
    """
    try:
        obj = json.loads(raw.decode("utf-8"), parse_float=_finite_float,
                         parse_constant=_reject_constant)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        reason = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise DecodeError("invalid_json", f"value is not valid JSON: {orjson_error}; "
                                          f"read with the json module: {reason}") from None
    return obj


def _load_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise DecodeError("invalid_json", "record has no value (null payload)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "number" not in str(exc):
            raise DecodeError("invalid_json", f"value is not valid JSON: {exc}") from None
        obj = _load_big_numbers(raw, exc)
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"value is JSON {type(obj).__name__}, not an object")
    return obj


def _required_string(obj: dict[str, Any], name: str, max_length: int) -> str:
    if name not in obj:
        raise DecodeError("missing_field", f"required field '{name}' is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise DecodeError("invalid_type", f"'{name}' must be a string, got {type(value).__name__}")
    if not value:
        raise DecodeError("invalid_type", f"'{name}' must not be empty")
    if len(value) > max_length:
        raise _too_long(name, value, max_length)
    return value


def _too_long(name: str, value: str, max_length: int) -> DecodeError:
    """Ids are held in memory (pending records, early labels, card state) and copied into
    verdicts and changelog keys: one unbounded id would make an output the broker refuses.

    >>> print(_too_long("card_id", "c" * 300, 256))
    'card_id' is 300 characters long, more than max_field_length (256)
    """
    return DecodeError("field_too_long", f"'{name}' is {len(value)} characters long, more "
                                         f"than max_field_length ({max_length})")


def parse_timestamp(value: Any) -> float:
    """Event time in epoch seconds from an RFC 3339 string or integer epoch milliseconds."""
    if isinstance(value, bool):
        raise DecodeError("invalid_timestamp", "'timestamp' must be RFC 3339 text or epoch ms")
    if isinstance(value, int):
        if not 0 <= value <= _MAX_EPOCH_MS:
            raise DecodeError("invalid_timestamp", f"epoch milliseconds out of range: {value}")
        return value / 1000.0
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError("invalid_timestamp", f"unparseable timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise DecodeError("invalid_timestamp", f"timestamp has no UTC offset: {value!r}")
        return parsed.timestamp()
    raise DecodeError(
        "invalid_timestamp",
        f"'timestamp' must be RFC 3339 text or epoch ms, got {type(value).__name__}",
    )


def _timestamp(obj: dict[str, Any], bounds: TimeBounds | None, record_ms: int,
               now_s: float) -> float:
    if "timestamp" not in obj:
        raise DecodeError("missing_field", "required field 'timestamp' is missing")
    value = obj["timestamp"]
    ts = parse_timestamp(value)
    if bounds is not None:
        bounds.check(value, ts, record_ms, now_s)
    return ts


def _iso(epoch_s: float) -> str:
    try:
        return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_s:.0f}s"


def _span(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Where an event time may lie, relative to the Kafka record timestamp.

    One event far in the future would move its partition's clock (eviction, label delays,
    TTLs) there for good; a date in year 1, or in 1970 because seconds were sent as
    milliseconds, means nothing either. The reference is the record's Kafka timestamp, or the
    wall clock when there is none (files); a reference later than the wall clock is taken as
    the wall clock, so a producer's clock cannot move the bound. An event time is accepted
    from `behind_s` before the reference (not checked without a Kafka timestamp: backlogs,
    replays and history files legitimately carry old times) to `ahead_s` after it.

    >>> bounds = TimeBounds(ahead_s=7 * 86400, behind_s=3650 * 86400)
    >>> record_ms, now = 1_795_687_200_000, 1_795_687_260.0  # produced a minute ago
    >>> bounds.check(1_795_687_200_250, 1_795_687_200.25, record_ms, now)  # fine: no error
    >>> def why(value: Any, ts: float) -> str:
    ...     try:
    ...         bounds.check(value, ts, record_ms, now)
    ...     except DecodeError as exc:
    ...         return f"{exc.reason}: {exc}"
    ...     return "accepted"
    >>> print(why("9999-12-31T23:59:59Z", 253_402_300_799.0))  # doctest: +NORMALIZE_WHITESPACE
    timestamp_out_of_range: timestamp 9999-12-31T23:59:59+00:00 is more than 7 days after the
    record's Kafka timestamp 2026-11-26T10:00:00+00:00 (max_timestamp_ahead_s)
    >>> seconds_sent_as_ms = 1_795_687_200
    >>> print(why(seconds_sent_as_ms, 1_795_687.2))  # doctest: +NORMALIZE_WHITESPACE
    timestamp_out_of_range: timestamp 1795687200 read as epoch milliseconds is
    1970-01-21T18:48:07+00:00, but read as epoch seconds it is 2026-11-26T10:00:00+00:00: the
    producer sends seconds where the contract wants epoch milliseconds (or RFC 3339 text)
    >>> why("2020-01-01T00:00:00Z", 1_577_836_800.0)  # years before its record: history
    'accepted'
    >>> why("0001-01-01T00:00:00Z", -62_135_596_800.0)[:60]
    'timestamp_out_of_range: timestamp 0001-01-01T00:00:00+00:00 '
    """

    ahead_s: float
    behind_s: float

    def check(self, value: Any, ts: float, record_ms: int, now_s: float) -> None:
        """Raise `timestamp_out_of_range` unless `ts` (parsed from `value`) is in bounds;
        `record_ms` <= 0 means the record has no Kafka timestamp."""
        has_record_time = record_ms > 0
        reference = min(record_ms / 1000.0, now_s) if has_record_time else now_s
        latest = reference + self.ahead_s
        earliest = reference - self.behind_s
        if (type(value) is int and value < _SECONDS_AS_MS_BELOW
                and earliest <= value <= latest):
            raise DecodeError(
                "timestamp_out_of_range",
                f"timestamp {value} read as epoch milliseconds is {_iso(ts)}, but read as "
                f"epoch seconds it is {_iso(value)}: the producer sends seconds where the "
                "contract wants epoch milliseconds (or RFC 3339 text)")
        against = "the record's Kafka timestamp" if has_record_time else "the wall clock"
        if ts > latest:
            raise DecodeError(
                "timestamp_out_of_range",
                f"timestamp {_iso(ts)} is more than {_span(self.ahead_s)} after {against} "
                f"{_iso(reference)} (max_timestamp_ahead_s)")
        if has_record_time and ts < earliest:
            raise DecodeError(
                "timestamp_out_of_range",
                f"timestamp {_iso(ts)} is more than {_span(self.behind_s)} before {against} "
                f"{_iso(reference)} (max_timestamp_behind_s)")


def _label_value(value: Any, required: bool) -> bool | None:
    if value is None and not required:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DecodeError("invalid_label", f"'is_fraud' must be a boolean or 0/1, got {value!r}")


def _amount(obj: dict[str, Any]) -> float:
    if "amount" not in obj:
        raise DecodeError("missing_field", "required field 'amount' is missing")
    value = obj["amount"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("invalid_type", f"'amount' must be a number, got {type(value).__name__}")
    try:
        amount = float(value)
    except OverflowError:  # an integer beyond a double's range
        amount = math.inf
    if not math.isfinite(amount) or amount < 0:
        raise DecodeError("invalid_amount", f"'amount' must be finite and >= 0, got {value!r}")
    return amount


def decode_transaction(raw: bytes | None, bounds: TimeBounds | None = None, record_ms: int = 0,
                       now_s: float = 0.0, max_length: int = MAX_FIELD_LENGTH) -> Transaction:
    """Validate one `transactions` value; raise DecodeError with a reason code on any breach.
    With `bounds`, the event time is also checked against the record's Kafka timestamp
    (`record_ms`, 0 when none) and the wall clock (`now_s`): see TimeBounds. A string field
    longer than `max_length` characters is `field_too_long`.

    >>> decode_transaction(b'{"transaction_id":"t1","card_id":"c1","merchant_id":"m1",'
    ...                    b'"amount":5,"timestamp":0}').card_id
    'c1'
    >>> try:
    ...     decode_transaction(b'{"transaction_id":"t1","card_id":"c1","merchant_id":"m1",'
    ...                        b'"amount":5,"timestamp":0}', max_length=1)
    ... except DecodeError as exc:
    ...     print(exc.reason)
    field_too_long
    """
    obj = _load_object(raw)
    tx_id, card, merchant = (_required_string(obj, name, max_length) for name in _TX_STRINGS)
    amount = _amount(obj)
    ts = _timestamp(obj, bounds, record_ms, now_s)
    label = _label_value(obj.get("is_fraud"), required=False)
    currency = obj.get("currency")
    if currency is not None:
        if not isinstance(currency, str):
            raise DecodeError("invalid_type", "'currency' must be a string")
        if len(currency) > max_length:
            raise _too_long("currency", currency, max_length)
    extras = {k: v for k, v in obj.items() if k not in _TX_KNOWN}
    return Transaction(tx_id, card, merchant, amount, ts, label, currency, extras)


def decode_label(raw: bytes | None, bounds: TimeBounds | None = None, record_ms: int = 0,
                 now_s: float = 0.0, max_length: int = MAX_FIELD_LENGTH) -> Label:
    """Validate one `labels` value (`bounds` and `max_length` as for decode_transaction)."""
    obj = _load_object(raw)
    tx_id = _required_string(obj, "transaction_id", max_length)
    card = _required_string(obj, "card_id", max_length)
    if "is_fraud" not in obj:
        raise DecodeError("missing_field", "required field 'is_fraud' is missing")
    label = _label_value(obj["is_fraud"], required=True)
    assert label is not None
    return Label(tx_id, card, label, _timestamp(obj, bounds, record_ms, now_s))


_second_cache: list[Any] = [None, ""]


def format_time(epoch_s: float) -> str:
    """RFC 3339 UTC with milliseconds, the format every output timestamp uses.

    Every verdict carries one, so the date part is formatted once per second and reused
    (milliseconds are truncated, as `isoformat(timespec="milliseconds")` does).
    """
    second = math.floor(epoch_s)
    micros = round((epoch_s - second) * 1e6)  # datetime rounds to microseconds first
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    millis = micros // 1000
    cache = _second_cache
    if cache[0] != second:
        cache[1] = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cache[0] = second
    return f"{cache[1]}.{millis:03d}Z"


def encode_verdict(verdict: Verdict) -> bytes:
    """Serialise a verdict; optional parts are omitted rather than sent as null."""
    return verdict_json(verdict.transaction_id, verdict.card_id, verdict.score,
                        verdict.decision, verdict.model_version, verdict.scored_at,
                        verdict.latency_ms, verdict.model_state, verdict.contributions,
                        verdict.challengers)


def verdict_json(transaction_id: str, card_id: str, score: float, decision: str,
                 model_version: str, scored_at: str, latency_ms: float, model_state: str,
                 contributions: dict[str, float] | None,
                 challengers: dict[str, float] | None) -> bytes:
    """A verdict's JSON from its fields: the one place that knows the verdict's wire form,
    for `encode_verdict` and for the scorer's per-event path, which skips the frozen
    `Verdict` (core/verdicts.py `verdict_bytes`).

    >>> verdict_json("t1", "c1", 0.5, "review", "lr@1", "1970-01-01T00:00:00.000Z", 3.0,
    ...              "ready", None, None)[:40]
    b'{"transaction_id":"t1","card_id":"c1","s'
    """
    body: dict[str, Any] = {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "score": score,
        "decision": decision,
        "model_version": model_version,
        "scored_at": scored_at,
        "latency_ms": latency_ms,
        "model_state": model_state,
    }
    if contributions is not None:
        body["contributions"] = contributions
    if challengers is not None:
        body["challengers"] = challengers
    return orjson.dumps(body)


def decode_verdict(raw: bytes) -> dict[str, Any]:
    """Read a verdict back (tests, compare); verdicts are produced by us, so no validation."""
    value: dict[str, Any] = orjson.loads(raw)
    return value


# A dead letter keeps at most this many bytes of the original value (its JSON text, escapes
# included), of its key and of its headers, by default (Settings.dead_letter_payload_bytes).
DEAD_LETTER_PART_BYTES = 65_536


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _text_prefix(text: str, budget: int) -> str:
    """A prefix of `text` whose JSON string (escapes included) fits `budget` bytes, found by
    proportional cuts: escaping makes a character up to 6 bytes, so a few cuts converge.

    >>> _text_prefix("abcdef", 4), _text_prefix("\\x01\\x01ab", 8)
    ('abcd', '\\x01')
    """
    n = min(len(text), budget)
    for _ in range(20):
        size = len(orjson.dumps(text[:n])) - 2  # without the quotes
        if size <= budget:
            return text[:n]
        n = n * budget // size  # < n, since size > budget
    return text[:budget // 6]  # every character fits in 6 bytes escaped


def _bounded_payload(payload: bytes, budget: int, body: dict[str, Any]) -> None:
    """The original value as text (UTF-8) or base64, cut to `budget` bytes of JSON when
    larger, with its size and SHA-256 kept so it can be matched with the original."""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        kept = text if len(payload) * 6 <= budget else _text_prefix(text, budget)
        body["payload"] = kept
        truncated = len(kept) < len(text)
    else:
        cut = payload[:budget // 4 * 3]
        body["payload_b64"] = base64.b64encode(cut).decode("ascii")
        truncated = len(cut) < len(payload)
    if truncated:
        body["payload_truncated"] = True
        body["payload_bytes"] = len(payload)
        body["payload_sha256"] = _digest(payload)


def encode_dead_letter(letter: DeadLetter, max_part_bytes: int = DEAD_LETTER_PART_BYTES) -> bytes:
    """The dead letter's value: the original bytes exactly, as text when they are UTF-8, else
    base64, unless their JSON is larger than `max_part_bytes`: then a prefix that fits, with
    `payload_truncated`, `payload_bytes` (the original size) and `payload_sha256`.

    >>> from stream.contracts.messages import SourceRef
    >>> letter = DeadLetter("invalid_json", "not JSON", SourceRef("tx", 0, 7), b"\\x01" * 5000)
    >>> body = orjson.loads(encode_dead_letter(letter, max_part_bytes=1024))
    >>> len(body["payload"]), body["payload_truncated"], body["payload_bytes"]
    (170, True, 5000)
    >>> body["payload_sha256"] == hashlib.sha256(b"\\x01" * 5000).hexdigest()
    True
    """
    error = letter.error
    if len(error) > _MAX_ERROR_CHARS:
        error = error[:_MAX_ERROR_CHARS] + f"... ({len(error)} characters)"
    body: dict[str, Any] = {
        "reason": letter.reason,
        "error": error,
        "source": {
            "topic": letter.source.topic,
            "partition": letter.source.partition,
            "offset": letter.source.offset,
        },
    }
    if letter.payload is None:
        body["payload"] = None
    else:
        _bounded_payload(letter.payload, max_part_bytes, body)
    key, headers = letter.key, letter.headers
    if key is not None and len(key) > max_part_bytes:
        body["key_truncated"] = True
        body["key_bytes"] = len(key)
        body["key_sha256"] = _digest(key)
    if headers and sum(len(name) + len(value or b"") for name, value in headers) \
            > max_part_bytes:
        body["headers_dropped"] = len(headers)
    return orjson.dumps(body)


def dead_letter_record(letter: DeadLetter, max_part_bytes: int = DEAD_LETTER_PART_BYTES
                       ) -> tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]:
    """The dead letter as a Kafka record (key, value, headers) that always fits in
    `4 * max_part_bytes + 16 KiB`: the original key and headers are kept when they fit in
    `max_part_bytes` each, else the key is cut to that length and the headers are dropped
    (the value says so, with the original key's size and SHA-256).

    >>> from stream.contracts.messages import SourceRef
    >>> letter = DeadLetter("field_too_long", "long", SourceRef("tx", 0, 7), b"{}",
    ...                     key=b"k" * 3000, headers=(("h", b"v" * 3000),))
    >>> key, value, headers = dead_letter_record(letter, max_part_bytes=1024)
    >>> len(key), headers, orjson.loads(value)["headers_dropped"]
    (1024, (), 1)
    """
    key, headers = letter.key, letter.headers
    if key is not None and len(key) > max_part_bytes:
        key = key[:max_part_bytes]
    if headers and sum(len(name) + len(value or b"") for name, value in headers) \
            > max_part_bytes:
        headers = ()
    return key, encode_dead_letter(letter, max_part_bytes), headers
