"""`stream train`: a history file through the live pipeline, into a snapshot that continues."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from keys_support import KEY

from stream.batch.source import Invalid, file_items, run_items
from stream.batch.train import train, train_file
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.devtools.files import write_csv, write_jsonl
from stream.devtools.synthetic import TrafficConfig, generate
from stream.errors import ConfigError
from stream.state.snapshot import load_snapshot


def _events(count: int = 3000, seed: int = 5) -> list[dict]:
    return list(generate(TrafficConfig(count=count, fraud_rate=0.03, seed=seed, n_cards=300,
                                       n_merchants=80)))


def test_train_equals_feeding_the_live_pipeline_by_hand(tmp_path: Path) -> None:
    events = _events()
    path = tmp_path / "history.jsonl"
    write_jsonl(events, path)
    config = PipelineConfig(label_delay_s=86400.0)
    result = train_file(path, tmp_path / "m.snapshot", config, "test-model", key=KEY)
    by_hand = Pipeline(config, "test-model")
    from stream.contracts.codec import decode_transaction

    for event in events:
        by_hand.score(decode_transaction(orjson.dumps(event)), 0)
    assert result.stats.transactions == len(events) and result.stats.invalid_total == 0
    assert result.evaluation == by_hand.summary()
    assert 0 < result.stats.learned < len(events)  # the last day's labels are not due yet
    snap = load_snapshot(tmp_path / "m.snapshot", KEY)
    assert snap.model_name == "test-model" and snap.events == len(events)
    assert snap.features  # the card and merchant state travels with the model
    probe = {"transaction_id": "probe", "card_id": events[-1]["card_id"], "merchant_id": "m-x",
             "amount": 250.0, "timestamp": events[-1]["timestamp"]}
    tx = decode_transaction(orjson.dumps(probe))
    assert Pipeline(config, init_from=snap).score(tx, 7).score == by_hand.score(tx, 0).score


def test_the_shared_champion_trains_through_a_one_partition_table_by_default() -> None:
    """The default settings' champion (`model_state = "shared"`) learns through the merchant
    table; `train` called without a table size (as a library caller does) gives it the one
    partition a history file is, instead of stopping with a ValueError."""
    from stream.contracts.codec import decode_transaction

    events = _events(1500)
    config = PipelineConfig(label_delay_s=3600.0, model_state="shared")
    items = [(0, decode_transaction(orjson.dumps(e)), None) for e in events]
    result = train(iter(items), config, "m")
    by_hand = Pipeline(config, "m", merchant_partitions=1)
    for event in events:
        by_hand.score(decode_transaction(orjson.dumps(event)), 0)
    assert result.evaluation == by_hand.summary() and result.stats.learned > 0
    assert result.snapshot.learned == by_hand.export_partition(0).learned > 0


def test_csv_and_jsonl_train_the_same_model(tmp_path: Path) -> None:
    events = _events(1500)
    write_jsonl(events, tmp_path / "h.jsonl")
    write_csv(events, tmp_path / "h.csv")
    a = train_file(tmp_path / "h.jsonl", tmp_path / "a.snapshot", PipelineConfig(), key=KEY)
    b = train_file(tmp_path / "h.csv", tmp_path / "b.snapshot", PipelineConfig(), key=KEY)
    assert a.evaluation == b.evaluation
    assert (tmp_path / "a.snapshot").stat().st_size > 0


def test_invalid_lines_are_skipped_with_the_scorers_reason(tmp_path: Path) -> None:
    events = _events(200)
    path = tmp_path / "h.jsonl"
    write_jsonl([*events[:100], b"{broken", {"transaction_id": "x"}, *events[100:]], path)
    items = list(file_items(path))
    invalid = [item for _, item, _ in items if isinstance(item, Invalid)]
    assert [i.reason for i in invalid] == ["invalid_json", "missing_field"]
    stats = run_items(Pipeline(PipelineConfig()), items)
    assert stats.transactions == 200 and dict(stats.invalid) == {"invalid_json": 1,
                                                                  "missing_field": 1}


def test_a_labels_file_is_applied_in_event_time_never_before_its_transaction(
    tmp_path: Path,
) -> None:
    events = _events(1000)
    labels = []
    for event in events:
        fraud = event.pop("is_fraud")
        due = event["timestamp"]  # RFC 3339 text: label the transaction two days later
        from stream.contracts.codec import format_time, parse_timestamp

        labels.append((parse_timestamp(due) + 2 * 86400, {
            "transaction_id": event["transaction_id"], "card_id": event["card_id"],
            "is_fraud": fraud}))
    labels.sort(key=lambda pair: pair[0])
    write_jsonl(events, tmp_path / "tx.jsonl")
    write_jsonl([{**body, "timestamp": format_time(t)} for t, body in labels],
                tmp_path / "labels.jsonl")
    result = train(file_items(tmp_path / "tx.jsonl", tmp_path / "labels.jsonl"),
                   PipelineConfig())
    assert result.stats.labels == 1000
    # Every label that became known inside the file's time span was learned, none was held
    # (a held label would mean it was processed before its transaction).
    assert result.stats.held_labels == 0 and result.stats.learned == 1000


def test_user_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "history.parquet"
    bad.write_text("x")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        list(file_items(bad))


def test_training_files_are_held_to_the_live_event_time_bounds(tmp_path: Path) -> None:
    """A year-9999 event in a history file would move the trained snapshot's clock there,
    and every scorer started from it (`--init-from`) with it; files have no Kafka record
    timestamp, so old history stays fine while the future and epoch seconds do not."""
    from stream.assembly import time_bounds
    from stream.config import load_settings

    events = list(generate(TrafficConfig(200, fraud_rate=0.05, seed=4)))
    events[50] = {**events[50], "timestamp": "9999-12-31T23:59:59Z"}
    events[60] = {**events[60], "timestamp": 1_795_687_200}  # seconds, sent as milliseconds
    events[70] = {**events[70], "timestamp": "2001-01-01T00:00:00Z"}  # old history: fine
    path = tmp_path / "history.jsonl"
    write_jsonl(events, path)
    bounds = time_bounds(load_settings(environ={}))
    items = list(file_items(path, None, bounds))
    invalid = [item for _, item, _ in items if isinstance(item, Invalid)]
    assert [i.reason for i in invalid] == ["timestamp_out_of_range"] * 2
    result = train(iter(items), PipelineConfig(), "m", None, False)
    assert result.stats.invalid["timestamp_out_of_range"] == 2
    assert result.snapshot.clock < 2e9
