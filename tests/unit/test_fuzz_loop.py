"""Fuzzing the scorer's loop (issue 13, item 9) with the in-memory Kafka doubles: whatever the
records on the transactions and labels topics, the loop ends normally, every transaction
record has exactly one verdict or one dead letter, every label record at most one dead letter
and nothing else, and every changelog row it wrote reads back into a partition state."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from changelog_support import GroupOfOne, LoopClients
from fuzz_support import NOW_MS, near_valid
from hypothesis import given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from keys_support import KEY
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import pipeline_config
from stream.config import Settings, load_settings
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record
from stream.kafka.testing import MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop
from stream.state.changelog import RestoredState, fold

PARTITIONS = (0, 1)


entries = st.tuples(st.sampled_from(PARTITIONS), st.sampled_from(["tx", "label"]),
                    st.one_of(near_valid(), near_valid("label"), st.binary(max_size=60)),
                    st.sampled_from([NOW_MS, 0, NOW_MS - 86_400_000]))
streams = st.tuples(st.lists(entries, max_size=30), st.lists(st.integers(0, 29), max_size=5))


def _records(settings: Settings, drawn: tuple[list[Any], list[int]]) -> list[Record]:
    """The drawn entries as records, with some of them sent again (duplicates)."""
    items, repeats = drawn
    items = items + [items[i] for i in repeats if i < len(items)]
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for partition, kind, value, record_ms in items:
        topic = settings.input_topic if kind == "tx" else settings.labels_topic
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        out.append(Record(topic, partition, offset, b"card", value, record_ms))
    return out


def _run(settings: Settings, records: list[Record]) -> list[tuple[str, bytes | None,
                                                                  bytes | None, int | None]]:
    sources = [(t, p) for t in (settings.input_topic, settings.labels_topic) for p in PARTITIONS]
    consumer = GroupOfOne([Polled(records, at_end=sources)], PARTITIONS)
    made: list[MemoryProducer] = []

    def producer() -> MemoryProducer:
        made.append(MemoryProducer())
        return made[-1]

    delivery = ExactlyOnce(producer, consumer, timeout_s=1.0)
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings, KEY)),
                      Metrics(CollectorRegistry()), LoopClients(),  # type: ignore[arg-type]
                      consumer, delivery)
    result = loop.run()
    assert result.recoveries == 0
    return [sent for p in made for sent in p.sent]


@fuzz_settings(max_examples=50)
@given(drawn=streams)
def test_every_record_gets_one_verdict_or_one_dead_letter_and_nothing_breaks(
        drawn: tuple[list[Any], list[int]]) -> None:
    settings = load_settings(environ={}, idle_exit_s=0.01, checkpoint_events=7,
                             max_task_idle_ms=0.0, **PER_PARTITION)
    records = _records(settings, drawn)
    sent = _run(settings, records)

    letters: Counter[tuple[str, int, int]] = Counter()
    for topic, _, value, _ in sent:
        if topic == settings.dlq_topic:
            letter = orjson.loads(value or b"")
            # A record the codec accepts never breaks the pipeline (which would dead-letter
            # it as processing_error rather than stop the scorer).
            assert letter["reason"] != "processing_error", letter["error"]
            source = letter["source"]
            letters[(source["topic"], source["partition"], source["offset"])] += 1
    assert max(letters.values(), default=1) == 1  # never two dead letters for one record
    answered = Counter(orjson.loads(value or b"")["transaction_id"]
                       for topic, _, value, _ in sent if topic == settings.output_topic)
    expected: Counter[str] = Counter()
    for r in records:
        if r.topic == settings.input_topic and (r.topic, r.partition, r.offset) not in letters:
            expected[decode_transaction(r.value).transaction_id] += 1
    assert answered == expected  # the rest: exactly one verdict each, duplicates included

    restored = {p: RestoredState() for p in PARTITIONS}
    for topic, key, value, partition in sent:
        if topic == settings.changelog_topic:
            assert partition is not None and key is not None
            fold(restored[partition], key, value)
    pipeline = Pipeline(pipeline_config(settings, KEY))
    for partition, state in restored.items():
        pipeline.restore_from_changelog(partition, state)
