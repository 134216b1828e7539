"""Corrupt state is quarantined, not a crash loop (issue 13, item 3), without a broker: every
row read back from the changelog is untrusted; a bad one is skipped, counted by store and
reason, and logged by key, and the good rows are restored."""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
import pytest
from changelog_support import ChangelogClients
from keys_support import KEY
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.kafka.records import Record
from stream.kafka.testing import MemoryConsumer
from stream.observability.metrics import Metrics
from stream.serving.intake import Intake
from stream.serving.ledger import Ledger
from stream.serving.recovery import QUARANTINE_LINES, Recovery
from stream.state.changelog import (
    OWNER_KEY,
    QUARANTINE_KINDS,
    RestoredState,
    encode_changes,
    fold,
    stamp,
)

TOPIC = "app.changelog"
BAD_ROWS: list[tuple[str, bytes, bytes, str, str]] = [
    # (what, key, value, store, reason)
    ("card row not JSON", b"c:bad-json", b"[1.0, 2.0", "card", "not_json"),
    ("merchant row not JSON", b"n:m-bad", b"\x80\x81garbage", "merchant", "not_json"),
    ("card key not UTF-8", b"c:\xff\xfe", b"[1.0]", "card", "not_utf8"),
    ("pending key not UTF-8", b"p:\xc3\x28", b'["m", 1.0, 0.5, [1.0]]', "pending", "not_utf8"),
    ("pending row wrong arity", b"p:t-arity", b'["m1", 1.7e9, 0.5]', "pending", "bad_shape"),
    ("card row an object", b"c:obj", b'{"a": 1}', "card", "bad_shape"),
    ("card row a string", b"c:str", b'[1.0, "2"]', "card", "bad_shape"),
    ("card row a bool", b"c:bool", b"[1.0, true]", "card", "bad_shape"),
    ("card row empty", b"c:empty", b"[]", "card", "bad_shape"),
    ("pending merchant not a string", b"p:t-type", b'[7, 1.7e9, 0.5, [1.0]]', "pending",
     "bad_shape"),
    ("card row NaN", b"c:nan", b"[1.7e9, NaN]", "card", "not_finite"),
    ("merchant row infinite", b"n:m-inf", b"[1.7e9, 1e999]", "merchant", "not_finite"),
    ("pending score infinite", b"p:t-inf", b'["m1", 1.7e9, Infinity, [1.0]]', "pending",
     "not_finite"),
    ("pending features not base64", b"p:t-b64", b'["m1", 1.7e9, 0.5, "@@@@"]', "pending",
     "bad_shape"),
    ("pending features half a number", b"p:t-half", b'["m1", 1.7e9, 0.5, "AAAAAA=="]',
     "pending", "bad_shape"),
    ("pending features empty", b"p:t-none", b'["m1", 1.7e9, 0.5, ""]', "pending", "bad_shape"),
    ("pending feature NaN, packed", b"p:t-pnan", b'["m1", 1.7e9, 0.5, "AAAAAAAA+H8="]',
     "pending", "not_finite"),
    ("owner row not JSON", OWNER_KEY, b"{", "owner", "not_json"),
    ("owner row wrong shape", OWNER_KEY, b'{"adopted": [1]}', "owner", "bad_shape"),
    ("unknown key", b"zz-unknown", b"[1.0]", "unknown", "unknown_key"),
]


def _tx(i: int, card: str = "c1", fraud: bool | None = None) -> Transaction:
    return Transaction(f"t{i}", card, f"m{i % 3}", 10.0 + i, 1.7e9 + i * 60.0, fraud)


def _live_records(config: PipelineConfig) -> tuple[Pipeline, list[tuple[bytes, bytes | None]]]:
    """A partition that scored 40 transactions, none labelled yet: cards, merchants, pending
    records and the model, as its checkpoint writes them."""
    live = Pipeline(config)
    for i in range(40):
        live.score(_tx(i, card=f"c{i % 5}"), 0)
    return live, encode_changes(live.drain_changes(0))


@pytest.mark.parametrize(("what", "key", "value", "store", "reason"), BAD_ROWS,
                         ids=[row[0] for row in BAD_ROWS])
def test_each_bad_row_is_quarantined_and_the_good_ones_restored(
        what: str, key: bytes, value: bytes, store: str, reason: str) -> None:
    config = PipelineConfig(label_delay_s=3600.0, track_changes=True, state_key=KEY)
    live, records = _live_records(config)
    restored = RestoredState()
    for k, v in records:
        fold(restored, k, v)
    fold(restored, key, value)
    assert [(q.store, q.reason, q.key) for q in restored.quarantined] == [(store, reason, key)]
    assert (store, reason) in QUARANTINE_KINDS
    resumed = Pipeline(config)
    assert resumed.restore_from_changelog(0, restored) == []
    assert resumed.partitions[0].features.n_cards == live.partitions[0].features.n_cards == 5
    assert len(resumed.pending) == len(live.pending) == 40
    probe = _tx(100, card="c1")
    assert resumed.score(probe, 0).score == live.score(probe, 0).score


def test_a_bad_last_value_forgets_the_key() -> None:
    """The last value of a key wins: when it is unreadable the key starts afresh, rather than
    restoring a value the scorer had already replaced."""
    restored = RestoredState()
    fold(restored, b"c:card-1", b"[1.0, 2.0]")
    fold(restored, b"c:card-1", b"[1.0, NaN]")
    assert restored.cards == {} and len(restored.quarantined) == 1


def test_rows_of_the_wrong_width_are_quarantined_before_the_label_handler() -> None:
    """A pending record with the wrong feature count used to crash later, when its label
    arrived (zip(..., strict=True) inside the label handler); a card or merchant row of
    another width would mean other features."""
    config = PipelineConfig(label_delay_s=3600.0, track_changes=True, state_key=KEY)
    live, records = _live_records(config)
    width = len(live.partitions[0].features.feature_names)
    restored = RestoredState()
    for k, v in records:
        fold(restored, k, v)
    fold(restored, b"p:t-short", orjson.dumps(["m1", 1.7e9, 0.3, [1.0] * (width - 1)]))
    fold(restored, b"c:c-wide", orjson.dumps([1.7e9] * 40))
    fold(restored, b"n:m-narrow", orjson.dumps([1.7e9, 1.0]))
    resumed = Pipeline(config)
    skipped = resumed.restore_from_changelog(0, restored)
    assert sorted((q.store, q.reason, q.key) for q in skipped) == [
        ("card", "wrong_width", b"c:c-wide"), ("merchant", "wrong_width", b"n:m-narrow"),
        ("pending", "wrong_width", b"p:t-short")]
    assert "t-short" not in resumed.pending and len(resumed.pending) == 40
    assert resumed.learn_label(Label("t-short", "c1", True, 1.7e9 + 10)) == "held"
    assert resumed.learn_label(Label("t3", "c3", True, 1.7e9 + 10)) == "learned"


# -- the scorer's side: counted, logged by key, rate-limited ---------------------------------------
def _recover(records: list[tuple[bytes, bytes | None]]) -> tuple[Recovery, Pipeline, Any]:
    settings = load_settings(environ={}, group_id="app", changelog_topic=TOPIC, **PER_PARTITION)
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings))
    registry = CollectorRegistry()
    as_records = [Record(TOPIC, 0, offset, key, value, 0, stamp("app"))
                  for offset, (key, value) in enumerate(records)]
    intake = Intake(MemoryConsumer(), settings.input_topic, settings.labels_topic, 1.0, 100)
    recovery = Recovery(settings, pipeline, ChangelogClients(as_records, TOPIC),  # type: ignore[arg-type]
                        MemoryConsumer(), None, Ledger(), intake,  # type: ignore[arg-type]
                        Metrics(registry), threading.Event())
    return recovery, pipeline, registry


def test_the_scorer_counts_and_logs_quarantined_rows_by_key(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={}, group_id="app", changelog_topic=TOPIC, **PER_PARTITION)
    config = pipeline_config(settings, KEY)
    _, records = _live_records(config)
    bad = [(key, value) for _, key, value, _, _ in BAD_ROWS if key != OWNER_KEY]
    recovery, pipeline, registry = _recover([*records, *bad])
    assert registry.get_sample_value("fraudstream_state_rows_quarantined_total",
                                     {"store": "card", "reason": "not_json"}) == 0.0
    with caplog.at_level(logging.WARNING, logger="stream.serving"):
        recovery.restore(0)
    assert pipeline.partitions[0].features.n_cards == 5 and len(pipeline.pending) == 40

    def count(store: str, reason: str) -> float | None:
        return registry.get_sample_value("fraudstream_state_rows_quarantined_total",
                                         {"store": store, "reason": reason})

    expected: dict[tuple[str, str], int] = {}
    for _, key, _, store, reason in BAD_ROWS:
        if key != OWNER_KEY:
            expected[store, reason] = expected.get((store, reason), 0) + 1
    for (store, reason), n in expected.items():
        assert count(store, reason) == n, (store, reason)
    assert count("card", "wrong_width") == 0.0
    lines = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    # The first few by key, then one line with how many more: never one line per row.
    assert len(lines) == QUARANTINE_LINES + 1
    assert lines[0].startswith(f"changelog {TOPIC}[0]: quarantined card row b'c:bad-json' "
                               "(not_json: not JSON:")
    assert f"{len(bad) - QUARANTINE_LINES} more rows quarantined" in lines[-1]
    assert "Traceback" not in caplog.text


def test_quarantined_rows_are_deleted_at_the_next_checkpoint_and_not_counted_again() -> None:
    """A restore that quarantines rows has the next checkpoint write tombstones for them
    (before any new value of the same key), so a later restore neither meets nor counts them;
    they were counted again on every restore before."""
    settings = load_settings(environ={}, group_id="app", changelog_topic=TOPIC, **PER_PARTITION)
    _, records = _live_records(pipeline_config(settings, KEY))
    bad = [(key, value) for _, key, value, _, _ in BAD_ROWS if key != OWNER_KEY]
    recovery, pipeline, registry = _recover([*records, *bad])
    recovery.restore(0)
    first = registry.get_sample_value("fraudstream_state_rows_quarantined_total",
                                      {"store": "card", "reason": "not_json"})
    assert first == 1.0 and 0 in pipeline.dirty
    pipeline.score(_tx(200, card="bad-json"), 0)  # the quarantined card is live again
    written = encode_changes(pipeline.drain_changes(0))
    tombstones = [key for key, value in written if value is None]
    assert set(tombstones) >= {key for key, _ in bad}
    assert written.index((b"c:bad-json", None)) < max(
        i for i, (key, value) in enumerate(written) if key == b"c:bad-json")

    again, resumed, registry2 = _recover([*records, *bad, *written])
    again.restore(0)
    assert "bad-json" in resumed.partitions[0].features.card_store  # its new value, kept
    assert 0 not in resumed.dirty
    quarantined = [s for metric in registry2.collect()
                   if metric.name == "fraudstream_state_rows_quarantined"
                   for s in metric.samples if s.name.endswith("_total")]
    assert sum(s.value for s in quarantined) == 0


def test_a_bad_row_superseded_by_a_later_value_is_not_reported() -> None:
    restored = RestoredState()
    fold(restored, b"c:card-1", b"[1.0, NaN]")
    fold(restored, b"c:card-1", b"[1.0, 2.0]")
    fold(restored, b"n:m-1", b"garbage")
    fold(restored, b"n:m-1", None)
    assert restored.cards == {"card-1": [1.0, 2.0]} and restored.quarantined == []
