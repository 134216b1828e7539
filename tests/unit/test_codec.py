"""The codec against the contract: every malformed kind gets its reason code, and the
hand-written validation agrees with topics/transactions.schema.json on the same corpus."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path

import jsonschema
import orjson
import pytest

from stream.contracts.codec import (
    DecodeError,
    TimeBounds,
    dead_letter_record,
    decode_label,
    decode_transaction,
    encode_dead_letter,
    encode_verdict,
    format_time,
    parse_timestamp,
)
from stream.contracts.messages import DeadLetter, SourceRef, Verdict

TOPICS = Path(__file__).resolve().parents[2] / "topics"
GOOD = {
    "transaction_id": "tx-1",
    "card_id": "card-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "timestamp": "2026-11-26T10:00:00.250Z",
}


GOOD_BYTES = orjson.dumps(GOOD)


def _with(**changes: object) -> bytes:
    event = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not _DROP})


_DROP = object()

BAD = [
    (b"not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (_with(card_id=_DROP), "missing_field"),
    (_with(amount=_DROP), "missing_field"),
    (_with(timestamp=_DROP), "missing_field"),
    (_with(card_id=42), "invalid_type"),
    (_with(merchant_id=""), "invalid_type"),
    (_with(amount="12.5"), "invalid_type"),
    (_with(amount=True), "invalid_type"),
    (_with(amount=-0.01), "invalid_amount"),
    (b'{"transaction_id":"t","card_id":"c","merchant_id":"m","amount":Infinity,'
     b'"timestamp":1}', "invalid_json"),
    (_with(amount=1e400 if False else -5), "invalid_amount"),
    (_with(timestamp="yesterday"), "invalid_timestamp"),
    (_with(timestamp="2026-11-26T10:00:00"), "invalid_timestamp"),
    (_with(timestamp=-1), "invalid_timestamp"),
    (_with(timestamp=1.5), "invalid_timestamp"),
    (_with(timestamp=True), "invalid_timestamp"),
    (_with(is_fraud="yes"), "invalid_label"),
    (_with(is_fraud=2), "invalid_label"),
    # Ids held in memory and copied into verdicts and changelog keys are bounded (issue 13).
    (_with(transaction_id="t" * 257), "field_too_long"),
    (_with(card_id="c" * 257), "field_too_long"),
    (_with(merchant_id="m" * 1_000_000), "field_too_long"),
    (_with(currency="E" * 257), "field_too_long"),
]


def test_good_event_decodes_with_event_time_and_extras() -> None:
    tx = decode_transaction(_with(mcc="5411", is_fraud=1, currency="EUR"))
    assert tx.transaction_id == "tx-1" and tx.amount == 12.5 and tx.is_fraud is True
    assert tx.timestamp == pytest.approx(1795687200.25)
    assert tx.extras == {"mcc": "5411"} and tx.currency == "EUR"


def test_epoch_millis_and_offsets_are_the_same_instant() -> None:
    assert parse_timestamp(1795687200250) == parse_timestamp("2026-11-26T11:00:00.250+01:00")


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_each_malformed_kind_has_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_transaction(raw)
    assert info.value.reason == reason
    assert str(info.value)


def test_null_value_is_a_dead_letter_not_a_crash() -> None:
    with pytest.raises(DecodeError) as info:
        decode_transaction(None)
    assert info.value.reason == "invalid_json"


def test_codec_agrees_with_the_json_schema() -> None:
    schema = json.loads((TOPICS / "transactions.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    corpus = [_with(), _with(is_fraud=False, country="FR"), _with(timestamp=1795687200250),
              _with(transaction_id="t" * 256, card_id="é" * 256, merchant_id="m" * 256,
                    currency="E" * 256)]
    corpus += [raw for raw, _ in BAD]
    for raw in corpus:
        try:
            document = json.loads(raw)
        except ValueError:
            continue  # not JSON at all: nothing for a schema to say
        schema_ok = validator.is_valid(document)
        try:
            decode_transaction(raw)
            codec_ok = True
        except DecodeError:
            codec_ok = False
        assert schema_ok == codec_ok, raw


def test_label_decoding() -> None:
    label = decode_label(b'{"transaction_id":"t","card_id":"c","is_fraud":0,"timestamp":5}')
    assert label.is_fraud is False and label.timestamp == 0.005
    with pytest.raises(DecodeError) as info:
        decode_label(b'{"transaction_id":"t","card_id":"c","timestamp":5}')
    assert info.value.reason == "missing_field"


def test_verdict_round_trip_follows_the_contract() -> None:
    schema = json.loads((TOPICS / "verdicts.schema.json").read_text())
    verdict = Verdict("t", "c", 0.25, "review", "v1", format_time(0.0), 3.5, {"amount_log": 1.0})
    body = orjson.loads(encode_verdict(verdict))
    jsonschema.validate(body, schema)
    assert body["scored_at"] == "1970-01-01T00:00:00.000Z"
    assert "challengers" not in body
    assert body["model_state"] == "ready"
    warming = orjson.loads(encode_verdict(Verdict("t", "c", 0.5, "approve", "v1", "x", 1.0,
                                                  model_state="warming")))
    assert warming["model_state"] == "warming"


@pytest.mark.parametrize("payload", [b"not json", b"\xff\xfe\x00binary"])
def test_dead_letter_keeps_the_original_bytes(payload: bytes) -> None:
    letter = DeadLetter("invalid_json", "bad", SourceRef("transactions", 2, 41), payload, b"k")
    body = orjson.loads(encode_dead_letter(letter))
    schema = json.loads((TOPICS / "transactions.dlq.schema.json").read_text())
    jsonschema.validate(body, schema)
    assert body["source"] == {"topic": "transactions", "partition": 2, "offset": 41}
    kept = body["payload"].encode() if "payload" in body else base64.b64decode(body["payload_b64"])
    assert kept == payload


def test_field_limits_follow_the_setting_for_transactions_and_labels() -> None:
    raw = _with(card_id="c" * 40)
    assert decode_transaction(raw, max_length=40).card_id == "c" * 40
    with pytest.raises(DecodeError) as info:
        decode_transaction(raw, max_length=39)
    assert info.value.reason == "field_too_long" and "'card_id' is 40 characters" in str(
        info.value)
    label = b'{"transaction_id":"%s","card_id":"c","is_fraud":1,"timestamp":5}' % (b"t" * 700)
    with pytest.raises(DecodeError) as info:
        decode_label(label)
    assert info.value.reason == "field_too_long"
    assert decode_label(label, max_length=700).transaction_id == "t" * 700
    schema = json.loads((TOPICS / "labels.schema.json").read_text())
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(label))


DLQ_SCHEMA = json.loads((TOPICS / "transactions.dlq.schema.json").read_text())


@pytest.mark.parametrize(("payload", "field"), [
    (b"\x01" * 200_000, "payload"),  # 1.2 MB once escaped: the poison record
    (b'{"merchant_id":"' + b"m" * 1_000_000 + b'"}', "payload"),
    (b"\xff" * 300_000, "payload_b64"),
])
def test_a_large_payload_is_cut_to_fit_with_its_size_and_hash(payload: bytes,
                                                               field: str) -> None:
    letter = DeadLetter("invalid_json", "x" * 5000, SourceRef("transactions", 0, 9), payload,
                        key=b"k" * 100_000, headers=(("trace", b"v" * 100_000), ("a", b"b")))
    key, value, headers = dead_letter_record(letter, max_part_bytes=65_536)
    assert len(key or b"") + len(value) + sum(len(n) + len(v) for n, v in headers) \
        <= 4 * 65_536 + 16_384
    body = orjson.loads(value)
    jsonschema.validate(body, DLQ_SCHEMA)
    kept = body[field].encode() if field == "payload" else base64.b64decode(body[field])
    assert payload.startswith(kept) and 0 < len(kept) < len(payload)
    assert len(orjson.dumps(body[field])) <= 65_536 + 2
    assert body["payload_truncated"] is True and body["payload_bytes"] == len(payload)
    assert body["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert key == b"k" * 65_536 and body["key_truncated"] is True
    assert body["key_bytes"] == 100_000
    assert body["key_sha256"] == hashlib.sha256(b"k" * 100_000).hexdigest()
    assert headers == () and body["headers_dropped"] == 2
    assert len(body["error"]) < 1100


def test_a_payload_that_fits_is_kept_exactly_without_truncation_fields() -> None:
    payload = b'{"note":"' + b"\x01" * 1000 + b'"}'  # 6 KB escaped: fits 64 KiB
    letter = DeadLetter("invalid_json", "bad", SourceRef("t", 0, 1), payload, b"key",
                        (("h", b"v"),))
    key, value, headers = dead_letter_record(letter)
    body = orjson.loads(value)
    assert body["payload"].encode() == payload and key == b"key" and headers == (("h", b"v"),)
    assert not {"payload_truncated", "payload_bytes", "key_truncated",
                "headers_dropped"} & body.keys()


def test_format_time_is_rfc3339_utc() -> None:
    assert format_time(1795687200.25) == "2026-11-26T10:00:00.250Z"
    assert math.isclose(parse_timestamp(format_time(1795687200.25)), 1795687200.25)


def test_cached_format_time_matches_datetime_everywhere() -> None:
    """format_time caches the date per second; it must agree with datetime to the ms."""
    import random
    from datetime import UTC, datetime

    rng = random.Random(5)
    samples = [rng.uniform(0, 4e9) for _ in range(20_000)] + [0.0, 0.9995, 1.0, 59.9999999]
    for t in samples:
        expected = datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")
        assert format_time(t) == expected.replace("+00:00", "Z"), t


# orjson reads numbers as 64-bit integers or doubles: a valid integer beyond a double's range
# used to make the whole record `invalid_json`, although the schema allows any extra field.
HUGE = int("9" * 400)


def test_a_huge_integer_in_an_extra_field_is_accepted_exactly() -> None:
    raw = GOOD_BYTES[:-1] + b',"loyalty_points":' + str(HUGE).encode() + b"}"
    tx = decode_transaction(raw)
    assert tx.extras == {"loyalty_points": HUGE} and tx.amount == 12.5
    schema = json.loads((TOPICS / "transactions.schema.json").read_text())
    assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(raw))


def test_a_huge_integer_in_a_label_extra_is_accepted() -> None:
    raw = (b'{"transaction_id":"t","card_id":"c","is_fraud":0,"timestamp":5,"case":'
           + str(HUGE).encode() + b"}")
    assert decode_label(raw).is_fraud is False


@pytest.mark.parametrize(("raw", "reason"), [
    # Known fields keep their own reasons when the number is huge.
    (json.dumps({**GOOD, 'amount': HUGE}).encode(), "invalid_amount"),
    (json.dumps({**GOOD, 'timestamp': HUGE}).encode(), "invalid_timestamp"),
    (json.dumps({**GOOD, 'is_fraud': HUGE}).encode(), "invalid_label"),
    # A number that is not an integer still has to fit a double.
    (GOOD_BYTES[:-1] + b',"x":1e999}', "invalid_json"),
    # The fallback parser is no more lenient than orjson about anything else.
    (GOOD_BYTES[:-1] + b',"x":' + str(HUGE).encode() + b',"y":"\\ud800"}', "invalid_json"),
    (GOOD_BYTES[:-1] + b',"x":' + str(HUGE).encode() + b',"y":NaN}', "invalid_json"),
    (GOOD_BYTES[:-1] + b',"x":' + str(HUGE).encode() + b',"y":' + b"[" * 5000 + b"}",
     "invalid_json"),
    # The documented limit: integers of more than 4300 digits (Python's int-from-text limit).
    (GOOD_BYTES[:-1] + b',"x":' + b"9" * 4301 + b"}", "invalid_json"),
])
def test_huge_numbers_keep_the_contract(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_transaction(raw)
    assert info.value.reason == reason, info.value


# -- event time is bounded (issue 13, item 4) -------------------------------------------------
BOUNDS = TimeBounds(ahead_s=7 * 86400.0, behind_s=3650 * 86400.0)
NOW = 1_795_687_260.0  # 2026-11-26T10:01:00Z
RECORD_MS = 1_795_687_200_000  # produced a minute before it is consumed


def _bounded(timestamp: object, record_ms: int = RECORD_MS, now: float = NOW) -> str:
    """The reason the event is refused, or "ok"."""
    try:
        decode_transaction(_with(timestamp=timestamp), BOUNDS, record_ms, now)
        label = json.dumps({"transaction_id": "t", "card_id": "c", "is_fraud": True,
                            "timestamp": timestamp}).encode()
        decode_label(label, BOUNDS, record_ms, now)
    except DecodeError as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize(("timestamp", "reason"), [
    ("9999-12-31T23:59:59Z", "timestamp_out_of_range"),
    (253_402_300_799_999, "timestamp_out_of_range"),  # the same, in epoch milliseconds
    ("2026-12-04T10:00:00Z", "timestamp_out_of_range"),  # 8 days ahead
    ("0001-01-01T00:00:00Z", "timestamp_out_of_range"),
    ("1970-01-01T00:00:00Z", "timestamp_out_of_range"),
    (0, "timestamp_out_of_range"),
    (1_795_687_200, "timestamp_out_of_range"),  # epoch seconds sent as milliseconds
    ("2026-12-02T10:00:00Z", "ok"),  # 6 days ahead: clocks and time zones disagree
    ("2026-11-26T09:59:59.999Z", "ok"),
    (1_795_687_200_250, "ok"),
    ("2019-01-01T00:00:00Z", "ok"),  # old, but a record can carry history
])
def test_event_time_is_bounded_by_the_record_timestamp(timestamp: object, reason: str) -> None:
    assert _bounded(timestamp) == reason


def test_a_backlog_keeps_its_old_event_times() -> None:
    """Records produced two years ago and consumed today: the past bound follows the record
    timestamp, not the wall clock, and so does the future bound."""
    two_years_ago_ms = RECORD_MS - 2 * 365 * 86_400_000
    assert _bounded(two_years_ago_ms + 5, record_ms=two_years_ago_ms) == "ok"
    assert _bounded(two_years_ago_ms + 30 * 86_400_000,
                    record_ms=two_years_ago_ms) == "timestamp_out_of_range"


def test_without_a_record_timestamp_only_the_wall_clock_bounds_the_future() -> None:
    """Files have no record timestamp: history of any age is fine, the future is not."""
    assert _bounded("1999-01-01T00:00:00Z", record_ms=0) == "ok"
    assert _bounded(1000, record_ms=0) == "ok"  # small test times: 1970, and not seconds
    assert _bounded("9999-12-31T23:59:59Z", record_ms=0) == "timestamp_out_of_range"
    assert _bounded(1_795_687_200, record_ms=0) == "timestamp_out_of_range"


def test_a_record_timestamp_in_the_future_does_not_move_the_bound() -> None:
    year_2100_ms = 4_102_444_800_000
    assert _bounded("2099-12-31T00:00:00Z", record_ms=year_2100_ms) == "timestamp_out_of_range"
    assert _bounded(1_795_687_200_250, record_ms=year_2100_ms) == "ok"


def test_out_of_range_messages_say_what_is_wrong() -> None:
    with pytest.raises(DecodeError, match="sends seconds where the contract wants epoch milli"):
        decode_transaction(_with(timestamp=1_795_687_200), BOUNDS, RECORD_MS, NOW)
    with pytest.raises(DecodeError, match=r"9999-12-31T23:59:59\+00:00 is more than 7 days after "
                                          r"the record's Kafka timestamp"):
        decode_transaction(_with(timestamp="9999-12-31T23:59:59Z"), BOUNDS, RECORD_MS, NOW)


def test_without_bounds_decoding_is_unchanged() -> None:
    assert decode_transaction(_with(timestamp="9999-12-31T23:59:59Z")).timestamp > 2e11
