"""File replay: CSV and JSON Lines in, the same events out; bad lines passed on as bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.devtools.files import read_events, write_csv, write_jsonl
from stream.devtools.synthetic import TrafficConfig, generate
from stream.errors import ConfigError


def sample() -> list[dict[str, object]]:
    return list(generate(TrafficConfig(300, fraud_rate=0.1, seed=3)))


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".JSONL", ".jsonlines"])
def test_jsonl_round_trip(tmp_path: Path, suffix: str) -> None:
    events = sample()
    path = tmp_path / f"events{suffix}"
    assert write_jsonl(events, path) == len(events)
    assert list(read_events(path)) == events


def test_csv_round_trip(tmp_path: Path) -> None:
    events = sample()
    path = tmp_path / "events.csv"
    assert write_csv(events, path) == len(events)
    back = list(read_events(path))
    assert back == events
    assert all(isinstance(e, dict) and isinstance(e["is_fraud"], bool) for e in back)


def test_csv_conversions(tmp_path: Path) -> None:
    path = tmp_path / "hand.csv"
    path.write_text(
        "transaction_id,card_id,merchant_id,amount,timestamp,is_fraud,currency,mcc\n"
        "t1,c1,m1,12.5,1767225600000,1,EUR,5411\n"
        "t2,c1,m1,3,2026-01-01T00:00:00Z,false,,0042\n"
        "t3,c2,m2,abc,soon,TRUE,USD,\n"
        "t4,c2,m2,1.00,1767225600001,,USD,5411\n"
    )
    rows: list[Any] = list(read_events(path))
    assert rows[0] == {"transaction_id": "t1", "card_id": "c1", "merchant_id": "m1",
                       "amount": 12.5, "timestamp": 1767225600000, "is_fraud": True,
                       "currency": "EUR", "mcc": "5411"}
    assert rows[1]["timestamp"] == "2026-01-01T00:00:00Z"
    assert rows[1]["is_fraud"] is False
    assert "currency" not in rows[1]  # empty cell = absent
    assert rows[1]["mcc"] == "0042"  # other columns stay text
    assert rows[2]["amount"] == "abc" and rows[2]["timestamp"] == "soon"  # left for the scorer
    assert rows[2]["is_fraud"] is True
    assert "is_fraud" not in rows[3]  # unlabelled


def test_csv_with_explicit_columns_streams_and_drops_others(tmp_path: Path) -> None:
    path = tmp_path / "narrow.csv"
    events = sample()[:5]
    write_csv(iter(events), path, columns=["transaction_id", "amount"])
    back = list(read_events(path))
    assert back == [{"transaction_id": e["transaction_id"], "amount": e["amount"]} for e in events]


def test_bad_jsonl_lines_are_yielded_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = {"transaction_id": "t1", "card_id": "c", "merchant_id": "m", "amount": 1.0,
            "timestamp": "2026-01-01T00:00:00.000Z"}
    path.write_bytes(
        orjson.dumps(good) + b"\n"
        + b"{not json\n"
        + b"\n"  # blank lines are skipped
        + b"[1, 2]\r\n"  # valid JSON but not an object
        + b"\xff\xfe garbage\n"
        + orjson.dumps(good)  # no trailing newline
    )
    assert list(read_events(path)) == [good, b"{not json", b"[1, 2]", b"\xff\xfe garbage", good]


def test_write_jsonl_passes_bytes_through(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    write_jsonl([b"{broken", {"a": 1}], path)
    assert path.read_bytes() == b'{broken\n{"a":1}\n'
    assert list(read_events(path)) == [b"{broken", {"a": 1}]


@pytest.mark.parametrize("name", ["events.json", "events.parquet", "events"])
def test_unknown_suffix_is_a_clear_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}\n")
    with pytest.raises(ValueError, match=r"\.csv.*\.jsonl"):
        read_events(path)


def test_missing_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_events(tmp_path / "absent.jsonl")


def test_write_csv_rejects_bytes(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_csv([b"raw"], tmp_path / "x.csv")  # type: ignore[list-item]
