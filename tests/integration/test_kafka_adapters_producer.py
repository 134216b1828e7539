"""The Kafka edge's contract (stream.kafka.clients), producer side: delivery reports, queue
bounds, transactions with consumer offsets (KIP-447), fencing and discarding, checked on both
adapters against one broker (fixtures in kafka_adapters_support.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka_adapters_support import (  # noqa: F401 - fixtures, used by name
    T,
    clients_fixture,
    drain,
    make_clients_fixture,
    offsets,
    produce,
    subscribed_fixture,
)

from stream.contracts.partitioning import partition_for
from stream.errors import FencedError
from stream.kafka.classify import ClientError, classify
from stream.kafka.clients import Clients
from stream.kafka.records import BEGINNING


def test_delivery_callbacks_run_inside_poll_and_flush_on_the_calling_thread(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2, prefix="dr")
    producer = clients.producer()
    reports: list[tuple[ClientError | None, int]] = []

    def report(error: ClientError | None) -> None:
        reports.append((error, threading.get_ident()))
    for i in range(20):
        producer.send(topic, b"k%d" % i, b"v", on_delivery=report)
    deadline = time.monotonic() + T
    while len(reports) < 10 and time.monotonic() < deadline:
        producer.poll(0.1)
    assert producer.flush(T) == 0
    producer.close(T)
    assert len(reports) == 20
    assert {error for error, _ in reports} == {None}
    assert {thread for _, thread in reports} == {threading.get_ident()}


def test_records_sent_with_shared_and_changing_headers_and_callbacks_keep_their_own(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    # The librdkafka adapter reuses the last headers list and callback wrapper while the
    # same objects come back (a checkpoint's stamp, an epoch's callback): a record without
    # headers or callback, or with others, must not inherit the previous record's.
    topic = new_topic(partitions=3, prefix="reuse")
    stamp = (("application_id", b"app"),)
    first: list[ClientError | None] = []
    second: list[ClientError | None] = []
    plan = [(stamp, first.append, None), (stamp, first.append, 2), (None, None, None),
            ((("i", b"3"),), second.append, 1), (stamp, None, 0), (None, first.append, None)]
    producer = clients.producer()
    try:
        for i, (headers, callback, partition) in enumerate(plan):
            producer.send(topic, b"k%d" % i, b"%d" % i, partition, headers, callback)
        assert producer.flush(T) == 0
    finally:
        producer.close(T)
    assert first == [None, None, None] and second == [None]
    consumer, _ = subscribed([topic])
    records, _ = drain(consumer, len(plan))
    by_value = {int(r.value or b"-1"): r for r in records}
    assert sorted(by_value) == list(range(len(plan)))
    for i, (headers, _, partition) in enumerate(plan):
        record = by_value[i]
        assert record.key == b"k%d" % i
        assert record.headers == (headers or ())
        assert record.partition == (partition_for(record.key, 3) if partition is None
                                    else partition)


def test_too_large_record_is_a_too_large_error(clients: Clients,
                                              new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="big")
    producer = clients.producer()
    errors: list[ClientError | None] = []
    try:
        producer.send(topic, b"k", b"x" * 3_000_000, on_delivery=errors.append)
        producer.flush(T)
    except ClientError as exc:
        errors.append(exc)
    producer.discard()
    assert len(errors) == 1 and errors[0] is not None and errors[0].kind == "too_large"


def test_a_transaction_failed_by_a_record_its_topic_refuses_for_size_says_so(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    """The broker (not the client) refuses a transactional record for its size: every call of
    that transaction that then fails says too_large, never a lost group (librdkafka reported
    "Erroneous state", and the scorer rewound for ever instead of finding the record)."""
    topic = new_topic(prefix="small", configs={"max.message.bytes": "50000"})
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    producer.begin_transaction()
    producer.send(topic, b"k", b"x" * 100_000)  # within the client's limit, over the topic's
    errors: list[ClientError] = []
    for call in (lambda: producer.flush(T), lambda: producer.send(topic, b"k", b"small"),
                 lambda: producer.commit_transaction(T)):
        try:
            call()
        except ClientError as exc:
            errors.append(exc)
    producer.discard()
    assert errors, "the transaction committed a record its topic refuses"
    assert [e.kind for e in errors] == ["too_large"] * len(errors), errors


def test_queue_full_is_reported_at_once(clients: Clients, new_topic: Callable[..., str]) -> None:
    topic = new_topic(prefix="qf")
    producer = clients.producer(max_queued=3)
    for i in range(3):
        producer.send(topic, b"k", b"v%d" % i)
    started = time.monotonic()
    with pytest.raises(ClientError) as raised:
        producer.send(topic, b"k", b"v3")
    assert raised.value.kind == "queue_full" and time.monotonic() - started < 1.0
    assert producer.flush(T) == 0
    producer.send(topic, b"k", b"v4")  # served reports free the queue
    assert producer.flush(T) == 0
    producer.close(T)


def test_transactions_commit_or_abort_outputs_and_offsets_together(
        make_clients: Callable[..., Clients], subscribed: Any,
        new_topic: Callable[..., str]) -> None:
    clients = make_clients()
    source, out = new_topic(prefix="in"), new_topic(prefix="out")
    produce(clients, source, 10)
    consumer, _ = subscribed([source])
    drain(consumer, 10)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    for records, upto, commit in ((3, 5, True), (2, 10, False)):
        producer.begin_transaction()
        for i in range(records):
            producer.send(out, b"k%d" % i, b"committed" if commit else b"aborted")
        producer.send_offsets_to_transaction({(source, 0): upto}, consumer.group_metadata(), T)
        if commit:
            producer.commit_transaction(T)
        else:
            producer.flush(T)
            producer.abort_transaction(T)
        assert make_clients().committed([(source, 0)], T) == {(source, 0): 5}
    producer.close(T)
    reader = clients.reader()
    reader.assign({(out, 0): BEGINNING})
    seen, at_end = drain(reader, 3, until_at_end={(out, 0)})
    reader.close()
    assert [r.value for r in seen] == [b"committed"] * 3


def test_offsets_with_a_stale_generation_are_refused_as_group_moved(
        clients: Clients, subscribed: Any, new_topic: Callable[..., str]) -> None:
    """KIP-447: a zombie whose partitions moved cannot commit their offsets."""
    source, out = new_topic(partitions=2, prefix="zin"), new_topic(prefix="zout")
    first, seen = subscribed([source])
    deadline = time.monotonic() + T
    while not seen.events:
        assert time.monotonic() < deadline
        first.poll(10, 0.2)
    stale = first.group_metadata()
    second, other = subscribed([source])
    while not other.events or len(first.assignment()) != 1:
        assert time.monotonic() < deadline
        first.poll(10, 0.1)
        second.poll(10, 0.1)
    producer = clients.producer(transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    producer.init_transactions(T)
    producer.begin_transaction()
    producer.send(out, b"k", b"zombie")
    with pytest.raises(ClientError) as raised:
        producer.send_offsets_to_transaction({(source, 0): 1}, stale, T)
        producer.commit_transaction(T)
    assert raised.value.kind == "group_moved", raised.value
    producer.abort_transaction(T)
    producer.close(T)
    assert clients.committed([(source, 0)], T) == {(source, 0): None}


def test_a_second_producer_with_the_same_id_fences_the_first(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    topic, tid = new_topic(prefix="fence"), f"tx-{uuid.uuid4().hex[:8]}"
    first = clients.producer(transactional_id=tid)
    first.init_transactions(T)
    first.begin_transaction()
    first.send(topic, b"k", b"zombie")
    first.flush(T)
    second = clients.producer(transactional_id=tid)
    second.init_transactions(T)
    with pytest.raises(ClientError) as raised:
        first.commit_transaction(T)
    assert raised.value.kind == "fenced" or isinstance(classify(raised.value, "commit"),
                                                      FencedError)
    first.discard()
    second.close(T)


def test_discard_drops_an_open_transaction_and_its_successor_starts_at_once(
        clients: Clients, new_topic: Callable[..., str]) -> None:
    topic, tid = new_topic(prefix="discard"), f"tx-{uuid.uuid4().hex[:8]}"
    first = clients.producer(transactional_id=tid)
    first.init_transactions(T)
    first.begin_transaction()
    for i in range(50):
        first.send(topic, b"k", b"dropped %d" % i)
    started = time.monotonic()
    first.discard()
    assert time.monotonic() - started < 2.0
    second = clients.producer(transactional_id=tid)
    second.init_transactions(T)  # aborts whatever the discarded one left open
    second.begin_transaction()
    second.send(topic, b"k", b"kept")
    second.commit_transaction(T)
    second.close(T)
    reader = clients.reader()
    reader.assign({(topic, 0): BEGINNING})
    records, _ = drain(reader, 1, until_at_end={(topic, 0)})
    reader.close()
    assert [r.value for r in records] == [b"kept"]
