"""The kafka-python adapter's error mapping, without a broker: every exception kafka-python
raises becomes a ClientError whose kind, retriable and fatal flags lead `classify` to the
same decision the librdkafka adapter's errors lead to."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import errors as kerr
from kafka.consumer.fetcher import RecordTooLargeError
from pydantic import SecretStr

from stream.config import load_settings
from stream.errors import AuthenticationError, FencedError, GroupMovedError, InfrastructureError
from stream.kafka.classify import ClientError, classify
from stream.kafka.kafkapython import Redacted, connection_options, producer_options
from stream.kafka.kafkapython_errors import cause_of, client_error, kind_of
from stream.kafka.kafkapython_producer import KafkaPythonProducer


@pytest.mark.parametrize("exc, kind", [
    (kerr.ProducerFencedError(), "fenced"),
    (kerr.InvalidProducerEpochError(), "fenced"),
    (kerr.UnknownMemberIdError(), "group_moved"),
    (kerr.IllegalGenerationError(), "group_moved"),
    (kerr.RebalanceInProgressError(), "group_moved"),
    (kerr.FencedInstanceIdError(), "group_moved"),
    (kerr.CommitFailedError(), "group_moved"),
    (kerr.CommitFailedError(kerr.IllegalGenerationError()), "group_moved"),
    (kerr.KafkaTimeoutError("Failed to update metadata after 0.1 secs."), "timed_out"),
    (kerr.RequestTimedOutError(), "timed_out"),
    (kerr.MessageSizeTooLargeError(), "too_large"),
    (kerr.RecordListTooLargeError(), "too_large"),
    (RecordTooLargeError("too big for max_partition_fetch_bytes"), "too_large"),
    (kerr.SaslAuthenticationFailedError(), "auth"),
    (kerr.UnsupportedSaslMechanismError(), "auth"),
    (kerr.TopicAuthorizationFailedError({"t"}), "auth"),
    (kerr.GroupAuthorizationFailedError("g"), "auth"),
    (kerr.ClusterAuthorizationFailedError(), "auth"),
    (kerr.TransactionalIdAuthorizationFailedError(), "auth"),
    (kerr.KafkaConnectionError("refused"), "other"),
    (kerr.CoordinatorNotAvailableError(), "other"),
    (kerr.NotLeaderForPartitionError(), "other"),
    (kerr.KafkaError("Could not add partitions", kerr.ProducerFencedError()), "other"),
    (kerr.KafkaError(kerr.ProducerFencedError()), "fenced"),
    (kerr.KafkaError(kerr.ProducerFencedError), "fenced"),
])
def test_kind(exc: BaseException, kind: str) -> None:
    assert kind_of(exc) == kind
    assert client_error(exc).kind == kind


def test_retriable_comes_from_the_kafka_python_class() -> None:
    assert client_error(kerr.KafkaTimeoutError()).retriable
    assert client_error(kerr.CoordinatorNotAvailableError()).retriable
    assert client_error(kerr.KafkaConnectionError()).retriable
    assert not client_error(kerr.IllegalGenerationError()).retriable
    assert not client_error(kerr.MessageSizeTooLargeError()).retriable


@pytest.mark.parametrize("exc", [kerr.ProducerFencedError(),
                                 kerr.TransactionalIdAuthorizationFailedError(),
                                 kerr.ClusterAuthorizationFailedError(),
                                 kerr.InvalidTxnStateError()])
def test_what_kafka_python_treats_as_fatal_is_fatal_and_never_retriable(exc: Any) -> None:
    error = client_error(exc)
    assert error.fatal and not error.retriable
    # Refused permissions stop the scorer as such, not as "fenced by another instance"; a
    # fence stops it; any other fatal state replaces the producer and rewinds.
    expected = {"auth": AuthenticationError, "fenced": FencedError}.get(error.kind,
                                                                        InfrastructureError)
    assert type(classify(error, "commit")) is expected


def test_the_caller_knows_better_than_the_class() -> None:
    assert client_error(kerr.KafkaError("in an error state"), fatal=True).fatal
    assert not client_error(kerr.ProducerFencedError(), fatal=False).fatal


def test_what_the_loop_does_about_each() -> None:
    assert isinstance(classify(client_error(kerr.RebalanceInProgressError()), "c"),
                      GroupMovedError)
    assert type(classify(client_error(kerr.KafkaTimeoutError()), "c")) is InfrastructureError
    assert type(classify(client_error(kerr.KafkaConnectionError()), "c")) is InfrastructureError
    timed_out_but_fatal = client_error(kerr.KafkaTimeoutError(), fatal=True)
    assert type(classify(timed_out_but_fatal, "c")) is InfrastructureError


def test_broker_error_codes_and_messages() -> None:
    error = client_error(kerr.ProducerFencedError(), what="commit_transaction")
    assert error.code == 90 and str(error) == "commit_transaction: [Error 90] ProducerFencedError"
    assert client_error(kerr.KafkaTimeoutError()).code == "KafkaTimeoutError"
    same = ClientError("x", kind="queue_full")
    assert client_error(same) is same


def test_cause_of_unwraps_only_generic_wrappers() -> None:
    inner = kerr.RebalanceInProgressError()
    assert cause_of(kerr.CommitFailedError(inner)) is inner
    assert cause_of(kerr.KafkaError("plain text")).args == ("plain text",)
    fenced = kerr.ProducerFencedError()
    assert cause_of(fenced) is fenced


class FakeTransactionManager:
    """The state kafka-python's TransactionManager exposes after a failed request."""

    def __init__(self, fatal: bool, last_error: BaseException | None) -> None:
        self.fatal, self.last_error = fatal, last_error

    def has_error(self) -> bool:
        return self.last_error is not None

    def has_fatal_error(self) -> bool:
        return self.fatal

    def is_transactional(self) -> bool:
        return True


def bare_producer(tm: Any = None, max_queued: int = 3) -> KafkaPythonProducer:
    """The adapter without a client behind it: enough for what runs before any I/O."""
    producer = object.__new__(KafkaPythonProducer)
    producer.__dict__.update(_tm=tm, max_queued=max_queued, _sent=0, _served=0, _known=set(),
                             _pending=None)
    from collections import deque
    producer._reports = deque()
    return producer


def test_after_an_error_the_generic_message_is_classified_by_its_real_cause() -> None:
    generic = kerr.KafkaError("Cannot execute transactional method because we are in an "
                              "error state: [Error 90] ProducerFencedError")
    fenced = bare_producer(FakeTransactionManager(True, kerr.ProducerFencedError()))
    error = fenced._error(generic, "abort_transaction")
    assert (error.kind, error.fatal, error.code) == ("fenced", True, 90)
    assert isinstance(classify(error, "abort"), FencedError)
    moved = bare_producer(FakeTransactionManager(False, kerr.CommitFailedError(
        "Transaction offset commit failed due to consumer group metadata mismatch")))
    error = moved._error(generic, "send_offsets_to_transaction")
    assert (error.kind, error.fatal) == ("group_moved", False)
    clean = bare_producer(FakeTransactionManager(False, None))
    assert clean._error(kerr.KafkaTimeoutError(), "send").kind == "timed_out"


def test_a_full_queue_is_refused_at_once_without_touching_the_client() -> None:
    producer = bare_producer(max_queued=3)
    producer._sent = 3
    with pytest.raises(ClientError) as raised:
        producer.send("t", b"k", b"v")
    assert raised.value.kind == "queue_full" and raised.value.retriable
    assert producer.unacknowledged() == 3


def test_a_timed_out_commit_refuses_abort_and_begin_as_in_progress() -> None:
    class Pending:
        is_done = False
    producer = bare_producer(FakeTransactionManager(False, None))
    producer._pending = ("commit_transaction", Pending())
    for call in (lambda: producer.abort_transaction(1.0), producer.begin_transaction):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.kind == "in_progress" and raised.value.retriable


def test_the_password_is_never_shown() -> None:
    settings = load_settings(environ={}, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="PLAIN", sasl_plain_username="u",
                             sasl_plain_password=SecretStr("hunter2"))
    options = producer_options(settings, "tx-1", 2.0)
    assert isinstance(options["sasl_plain_password"], Redacted)
    assert options["sasl_plain_password"].encode() == b"hunter2"  # what SASL sends
    assert "hunter2" not in repr(options) and "hunter2" not in f"{options}"
    assert "hunter2" not in str(connection_options(settings))
