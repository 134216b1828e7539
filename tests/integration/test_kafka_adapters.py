"""The Kafka edge's contract (stream.kafka.clients), consumer side: group members, rebalance
callbacks, readers and admin, checked on both adapters against one broker (the producer side
is in test_kafka_adapters_producer.py; fixtures in kafka_adapters_support.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka_adapters_support import (  # noqa: F401 - fixtures, used by name
    Recorder,
    T,
    clients_fixture,
    drain,
    make_clients_fixture,
    offsets,
    produce,
    subscribed_fixture,
)

from stream.contracts.partitioning import partition_for
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Clients, GroupConsumer
from stream.kafka.kafkapython_consumer import KafkaPythonGroupConsumer
from stream.kafka.records import BEGINNING, Record, Source
from stream.kafka.restore import read_partition
from stream.serving.intake import Intake


def test_keyed_records_come_back_in_offset_order_where_murmur2_puts_them(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3, prefix="order")
    before = int(time.time() * 1000)
    produce(clients, topic, 60)
    after = int(time.time() * 1000)
    consumer, _ = subscribed([topic])
    sources = {(topic, p) for p in range(3)}
    records, at_end = drain(consumer, 60, until_at_end=sources)
    assert len(records) == 60 and at_end == sources
    for record in records:
        i = int(record.value.decode()[1:])  # type: ignore[union-attr]
        assert record.key == f"k{i}".encode()
        assert record.partition == partition_for(record.key, 3)
        assert record.headers == (("i", str(i).encode()),)
        assert before - 1000 <= record.timestamp_ms <= after + 1000
    for source in sources:
        got = offsets(records, source)
        assert got == list(range(len(got)))
        values = [int(r.value.decode()[1:]) for r in records if r.source == source]  # type: ignore[union-attr]
        assert values == sorted(values)  # produce order kept within a partition


def test_at_end_where_an_open_transaction_holds_the_last_stable_offset(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="open")
    produce(clients, topic, 3)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    producer.begin_transaction()
    producer.send(topic, b"k", b"open")
    producer.flush(T)  # on the log, past what read_committed may see
    try:
        consumer, _ = subscribed([topic])
        records, _ = drain(consumer, 3, until_at_end={(topic, 0)})
        assert offsets(records, (topic, 0)) == [0, 1, 2]
    finally:
        producer.abort_transaction(T)
        producer.close(T)


def test_an_end_held_by_a_transaction_moves_on_when_it_commits(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The end a member reports is the last stable offset: before an open transaction's
    records while it is open, after them once it commits. kafka-python's adapter takes it
    from the fetch responses, as librdkafka does, and never asks the broker in a poll:
    before, it asked (ListOffsets, blocking the poll) for a partition 0.5 s below its high
    watermark, and an answer stayed up to a second stale after the commit."""
    topic = new_topic(prefix="held")
    source = (topic, 0)
    produce(clients, topic, 3)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    producer.begin_transaction()
    for i in (3, 4):
        producer.send(topic, b"k", f"v{i}".encode())
    producer.flush(T)
    try:
        consumer, _ = subscribed([topic])
        asked: list[Any] = []
        if isinstance(consumer, KafkaPythonGroupConsumer):
            real = consumer._consumer.end_offsets

            def end_offsets(*args: Any, **kwargs: Any) -> Any:
                asked.append(args)
                return real(*args, **kwargs)

            monkeypatch.setattr(consumer._consumer, "end_offsets", end_offsets)
        records, _ = drain(consumer, 3, until_at_end={source})
        held_until = time.monotonic() + 1.5  # past the old adapter's 0.5 s before asking
        while time.monotonic() < held_until:
            assert consumer.poll(100, 0.2).records == []
        producer.commit_transaction(T)
        more, _ = drain(consumer, 2, until_at_end={source})
        assert offsets(records + more, source) == [0, 1, 2, 3, 4]
        assert [r.value for r in more] == [b"v3", b"v4"]
        assert asked == []
    finally:
        producer.close(T)


def test_pause_resume_loses_and_duplicates_nothing(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="pause")
    source = (topic, 0)
    produce(clients, topic, 300)
    consumer, _ = subscribed([topic])
    records, _ = drain(consumer, 1, max_records=7)  # the fetch brought far more than 7
    consumer.pause([source])
    for _ in range(5):
        assert consumer.poll(7, 0.2).records == []
    consumer.resume([source])
    started = time.monotonic()
    first = consumer.poll(7, 10.0).records  # records are there: no waiting for the timeout
    assert first and time.monotonic() - started < 2.0
    more, _ = drain(consumer, 300 - len(records) - len(first), max_records=7)
    assert offsets(records + first + more, source) == list(range(300))


def test_seek_to_an_offset_and_to_the_beginning(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="seek")
    source = (topic, 0)
    produce(clients, topic, 20)
    consumer, _ = subscribed([topic])
    drain(consumer, 20)
    consumer.seek(source, 12)
    records, _ = drain(consumer, 8)
    assert offsets(records, source) == list(range(12, 20))
    consumer.seek(source, BEGINNING)
    records, _ = drain(consumer, 20)
    assert offsets(records, source) == list(range(20))


def test_commit_is_seen_by_a_fresh_client_and_lag_from_cached_values(
        make_clients: Callable[..., Clients], subscribed: Any,
        new_topic: Callable[..., str]) -> None:
    clients = make_clients()
    topic = new_topic(partitions=2, prefix="commit")
    produce(clients, topic, 10, partition=0)
    consumer, _ = subscribed([topic])
    drain(consumer, 10, until_at_end={(topic, 0), (topic, 1)})  # 1 is empty: at its end
    consumer.commit({(topic, 0): 7}, asynchronous=False)
    assert make_clients().committed([(topic, 0), (topic, 1)], T) == {(topic, 0): 7,
                                                                      (topic, 1): None}
    consumer.commit({(topic, 0): 9}, asynchronous=True)
    deadline = time.monotonic() + T
    while make_clients().committed([(topic, 0)], T) != {(topic, 0): 9}:
        assert time.monotonic() < deadline
        consumer.poll(10, 0.1)  # asynchronous commits complete inside poll
    assert consumer.lag({})[(topic, 0)] == 0
    assert consumer.lag({(topic, 0): 4})[(topic, 0)] == 6
    assert consumer.topic_partitions(T)[topic] == 2


def wait_caught_up(consumer: GroupConsumer, want: dict[Source, int]) -> None:
    """Poll (the client's fetches answer inside or beside it) until `caught_up` says `want`."""
    deadline = time.monotonic() + T
    while (got := consumer.caught_up()) != want:
        assert time.monotonic() < deadline, f"caught_up {got}, wanted {want}"
        assert consumer.poll(500, 0.1).records == []


def test_caught_up_is_what_the_client_holds_nothing_more_of(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    """What settles a doubted end of partition (serving/intake.py): the client's position at
    its cached high watermark. An empty partition is caught up at 0 (librdkafka knows no
    position there: its end-of-partition event does), a committed transaction's at the
    offset past its marker; a partition with records the client has not handed out, or an
    open transaction's records on the log, is not."""
    topic = new_topic(partitions=3, prefix="caught")
    empty, plain, transactional = (topic, 0), (topic, 1), (topic, 2)
    produce(clients, topic, 10, partition=1)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    try:
        producer.init_transactions(T)
        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, b"k", f"t{i}".encode(), partition=2)
        producer.commit_transaction(T)
        consumer, _ = subscribed([topic])
        records: list[Record] = []
        deadline = time.monotonic() + T
        while not any(r.source == plain for r in records):  # all ten written before
            assert time.monotonic() < deadline
            records += consumer.poll(4, 0.2).records
        assert plain not in consumer.caught_up()  # handed out four at most
        drain(consumer, 15 - len(records))
        wait_caught_up(consumer, {empty: 0, plain: 10, transactional: 6})

        producer.begin_transaction()
        producer.send(topic, b"k", b"open", partition=2)
        producer.flush(T)  # on the log, not readable yet
        wait_caught_up(consumer, {empty: 0, plain: 10})
        producer.commit_transaction(T)
        records, _ = drain(consumer, 1, until_at_end={transactional})
        assert offsets(records, transactional) == [6]
        wait_caught_up(consumer, {empty: 0, plain: 10, transactional: 8})
    finally:
        producer.close(T)


def test_callbacks_run_on_the_polling_thread_with_both_topics(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    a, b = new_topic(partitions=2, prefix="ta"), new_topic(partitions=2, prefix="tb")
    committed: list[Source] = []
    holder: dict[str, GroupConsumer] = {}

    def checkpoint(sources: list[Source]) -> None:  # what the loop does: commit, synchronously
        holder["c"].commit({s: 0 for s in sources if s[0] == a}, asynchronous=False)
        committed.extend(sources)
    first, recorder = subscribed([a, b], Recorder(on_revoked=checkpoint))
    holder["c"] = first
    every = sorted((t, p) for t in (a, b) for p in range(2))
    deadline = time.monotonic() + T
    while not recorder.events:
        assert time.monotonic() < deadline
        first.poll(10, 0.2)
    assert recorder.events[0][:2] == ("assigned", every)
    assert sorted(first.assignment()) == every

    second, other = subscribed([a, b])  # range assignor: partition N of both topics together
    # Until both members hold their share (one member's new assignment can be seen before
    # the other's has been delivered to it).
    while len(first.assignment()) != 2 or len(second.assignment()) != 2:
        assert time.monotonic() < deadline
        first.poll(10, 0.1)
        second.poll(10, 0.1)
    assert ("revoked", every) in [e[:2] for e in recorder.events]
    mine, theirs = sorted(first.assignment()), sorted(second.assignment())
    assert {p for _, p in mine} | {p for _, p in theirs} == {0, 1}
    assert len({p for _, p in mine}) == 1 and len(mine) == 2 and len(theirs) == 2
    assert {thread for *_, thread in recorder.events + other.events} == {threading.get_ident()}
    first.close()
    assert recorder.events[-1][:2] == ("revoked", mine)
    assert sorted(committed) == sorted(every + mine)


def test_a_partition_kept_across_a_rebalance_restarts_from_its_committed_offset(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    """What was fetched but not committed is fetched again after a rebalance, also for the
    partition this member keeps: the scorer drops such records at revocation. kafka-python
    kept the position past them, and they were never processed until a restart."""
    topic = new_topic(partitions=2, prefix="keep")
    for p in range(2):
        produce(clients, topic, 10, start=10 * p, partition=p)
    first, _ = subscribed([topic])
    fetched, _ = drain(first, 20)
    assert len(fetched) == 20
    first.commit({(topic, 0): 3, (topic, 1): 3}, asynchronous=False)
    second, _ = subscribed([topic])
    deadline = time.monotonic() + T
    again: list[Record] = []
    while len(first.assignment()) != 1 or len(second.assignment()) != 1:
        assert time.monotonic() < deadline
        again.extend(first.poll(10, 0.1).records)
        second.poll(10, 0.1)
    kept = first.assignment()[0]
    while len([r for r in again if r.source == kept]) < 7:
        assert time.monotonic() < deadline, offsets(again, kept)
        again.extend(first.poll(10, 0.1).records)
    assert offsets(again, kept)[-7:] == list(range(3, 10))


class IntakeListener(Recorder):
    """Revocations and assignments passed to an intake, as the scorer's rebalance does."""

    intake: Intake

    def on_assigned(self, sources: list[Source]) -> None:
        super().on_assigned(sources)
        self.intake.track(sources)

    def on_revoked(self, sources: list[Source]) -> None:
        super().on_revoked(sources)
        self.intake.revoke(sources)


def test_a_partition_the_intake_paused_is_fetched_again_after_a_rebalance_keeps_it(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    """The intake pauses a partition far ahead. An eager rebalance revokes it and gives it
    straight back, and both clients keep its pause through that: the intake forgot the pause
    at revocation without lifting it, and the partition was never fetched again."""
    topic = new_topic(partitions=2, prefix="pausekeep")
    for p in range(2):
        produce(clients, topic, 50, start=50 * p, partition=p)
    listener = IntakeListener()
    first, _ = subscribed([topic], listener)
    intake = Intake(first, topic, "labels", max_wait_s=0.0, pause_above=5)
    listener.intake = intake
    seen: set[Source] = set()
    deadline = time.monotonic() + T
    while seen != {(topic, 0), (topic, 1)}:  # each then holds over 5 records: paused
        assert time.monotonic() < deadline, seen
        polled = first.poll(100, 0.2)
        intake.take(polled)
        seen |= {r.source for r in polled.records}
    second, _ = subscribed([topic])
    while len(first.assignment()) != 1 or len(second.assignment()) != 1:
        assert time.monotonic() < deadline
        intake.take(first.poll(100, 0.1))
        second.poll(10, 0.1)
    kept = first.assignment()[0]
    released: list[Record] = []
    while len(offsets(released, kept)) < 50:
        assert time.monotonic() < deadline, (kept, offsets(released, kept))
        intake.take(first.poll(100, 0.2))
        released.extend(a.record for a in intake.release())
    assert offsets(released, kept) == list(range(50))  # nothing was committed: all again


def test_a_failing_callback_surfaces_from_poll_and_loses_no_record(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="cbfail")
    produce(clients, topic, 5)

    class Boom(Recorder):
        def on_assigned(self, sources: list[Source]) -> None:
            super().on_assigned(sources)
            if len(self.events) == 1:
                raise RuntimeError("restore failed")
    consumer, recorder = subscribed([topic], Boom())
    records: list[Record] = []
    deadline = time.monotonic() + T
    with pytest.raises(RuntimeError, match="restore failed"):
        while True:
            assert time.monotonic() < deadline
            records.extend(consumer.poll(10, 0.2).records)
    more, _ = drain(consumer, 5 - len(records), timeout_s=10.0)
    assert offsets(records + more, (topic, 0)) == list(range(5))


def test_reader_watermarks_times_and_reading_to_the_end(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2, prefix="read")
    produce(clients, topic, 6, partition=0)
    produce(clients, topic, 4, partition=1)
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    produce(clients, topic, 3, start=6, partition=0)
    reader = clients.reader(bulk=True)
    try:
        assert reader.partitions(topic) == [0, 1] and reader.partitions(f"no-{topic}") == []
        assert reader.watermarks((topic, 0), T) == (0, 9)
        assert reader.offsets_for_time([(topic, 0), (topic, 1)], middle) == {
            (topic, 0): 6, (topic, 1): None}
        reader.assign({(topic, 0): BEGINNING, (topic, 1): 2})
        sources = {(topic, 0), (topic, 1)}
        records, at_end = drain(reader, 11, until_at_end=sources)
        assert offsets(records, (topic, 0)) == list(range(9))
        assert offsets(records, (topic, 1)) == [2, 3]
    finally:
        reader.close()


def test_reader_end_is_the_last_stable_offset(clients: Clients,
                                              new_topic: Callable[..., str]) -> None:
    """... and a reader that keeps polling reads the transaction once it commits."""
    topic = new_topic(prefix="lso")
    produce(clients, topic, 4)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    producer.begin_transaction()
    producer.send(topic, b"k", b"open")
    producer.flush(T)  # on the log, past the high watermark read_committed may see
    reader = clients.reader()
    try:
        low, end = reader.watermarks((topic, 0), T)  # the protocol allows the high watermark
        assert low == 0 and end in (4, 5)
        if clients.name == "kafka-python":
            assert end == 4  # ListOffsets under read_committed: the last stable offset
        reader.assign({(topic, 0): BEGINNING})
        records, _ = drain(reader, 4, until_at_end={(topic, 0)})
        assert offsets(records, (topic, 0)) == [0, 1, 2, 3]
        producer.commit_transaction(T)
        records, _ = drain(reader, 1)
        assert [(r.offset, r.value) for r in records] == [(4, b"open")]
    finally:
        reader.close()
        producer.close(T)


def test_a_restore_waits_for_a_transaction_open_before_it_and_reads_what_committed_after(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    """A crashed owner's open transaction holds the last stable offset below a later owner's
    committed checkpoint: the restore must wait for it to end, not stop before both."""
    topic = new_topic(prefix="settle")
    row = orjson.dumps([1.7e9, 1.0, 2.0])
    zombie = clients.producer(transactional_id=f"zombie-{uuid.uuid4().hex[:8]}")
    zombie.init_transactions(T)
    zombie.begin_transaction()
    zombie.send(topic, b"c:crashed", row, partition=0)
    zombie.flush(T)  # open: offset 0
    later = clients.producer(transactional_id=f"later-{uuid.uuid4().hex[:8]}")
    later.init_transactions(T)
    later.begin_transaction()
    later.send(topic, b"c:committed", row, partition=0)
    later.commit_transaction(T)  # offset 1 and its marker, behind the open transaction
    later.close(T)
    reader = clients.reader(bulk=True)
    aborter = threading.Timer(2.0, zombie.abort_transaction, args=(T,))
    try:
        assert reader.log_end((topic, 0), T) == 3
        with pytest.raises(InfrastructureError, match="did not end within 1s"):
            read_partition(reader, topic, 0, settle_s=1.0)
        started = time.monotonic()
        aborter.start()
        state = read_partition(reader, topic, 0, settle_s=30.0)
        assert time.monotonic() - started >= 1.5
        assert set(state.cards) == {"committed"}
    finally:
        aborter.cancel()
        if aborter.ident is not None:
            aborter.join()
        reader.close()
        zombie.close(T)


def test_admin_creates_lists_describes_and_reports_existing(clients: Clients) -> None:
    admin = clients.admin()
    name = f"adm-{uuid.uuid4().hex[:10]}"
    try:
        assert admin.create_topics({name: (3, 1, {"retention.ms": "123456"})}) == {name: None}
        again = admin.create_topics({name: (3, 1, {})})[name]
        assert again is not None and "already exists" in again
        bad = admin.create_topics({f"bad-{name}": (1, 1, {"cleanup.policy": "bogus"})})
        assert bad[f"bad-{name}"] and "already exists" not in bad[f"bad-{name}"]
        assert admin.topics()[name] == 3
        config = admin.topic_configs([name])[name]
        assert config["retention.ms"] == "123456" and config["cleanup.policy"] == "delete"
        assert admin.replication_factors([name, f"no-{name}"]) == {name: 1}
        admin.delete_topics([name, f"no-{name}"])
        deadline = time.monotonic() + T
        while name in admin.topics():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        admin.close()


def test_a_synchronous_commit_the_broker_refuses_for_one_partition_raises(
        subscribed: Any, new_topic: Callable[..., str]) -> None:
    """The broker answers an offset commit partition by partition, and a refusal must not
    pass for a commit, or `AtLeastOnce.settled` would trust offsets the group does not hold.
    confluent-kafka raises the first refused partition's error (librdkafka makes it the
    call's), and kafka-python raises at once for an unknown partition. Partition 7 of a
    2-partition topic is refused as unknown."""
    topic = new_topic(partitions=2, prefix="refused")
    consumer, _ = subscribed([topic])
    with pytest.raises(ClientError):
        consumer.commit({(topic, 0): 1, (topic, 7): 1}, asynchronous=False)
