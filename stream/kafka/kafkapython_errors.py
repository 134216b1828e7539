"""kafka-python's exceptions as `ClientError`s: one mapping for every kafka-python call.

kafka-python raises one exception class per broker error code (kafka.errors), plus client-side
ones (KafkaTimeoutError, IllegalStateError, ...) and, for transactions, generic
`KafkaError("Cannot execute transactional method because we are in an error state: ...")`
once the producer's transaction manager holds an error. The kind comes from the class (or
from the error it wraps: CommitFailedError(RebalanceInProgressError()), KafkaError(cause));
`retriable` is the class's own verdict; `fatal` is the caller's knowledge that the client
cannot go on (the producer's transaction manager is in its fatal state), else the classes
kafka-python itself treats as fatal for a producer.

Decisions, and why:
- ProducerFencedError and InvalidProducerEpochError are `fenced` (another producer bumped our
  epoch; kafka-python turns InvalidProducerEpoch into ProducerFenced on transactional calls).
- TransactionalIdAuthorizationFailedError is `auth`, not `fenced`: nobody took our id, we may
  not use it. It is fatal, so `classify` still stops the loop.
- CommitFailedError is `group_moved`: kafka-python raises it for an offset commit (or a
  transactional one, KIP-447) whose generation or member id the group no longer knows.
- FencedInstanceIdError is `group_moved` as in the librdkafka adapter (a static member that
  lost its instance id to another process: the group moved on without us).
- A refused login is `auth`, even though kafka-python (3.0.12) never raises it: its
  bootstrap retries the SaslAuthenticationFailedError until its timeout and raises
  "KafkaTimeoutError: Unable to bootstrap". It does log the refusal, with the exception as
  an argument, from its connection manager and connections; `WATCH` hears those records (a
  logging filter on these two loggers that drops nothing), and the clients' constructors
  explain their timeout with it. Those loggers must stay enabled at WARNING (the default;
  the CLI quiets the clients at its handler, not at their loggers).
"""

from __future__ import annotations

import logging

from kafka import errors as kerr
from kafka.consumer.fetcher import RecordTooLargeError

from stream.kafka.classify import ClientError, FailureWatch, Kind

_KINDS: tuple[tuple[tuple[type[BaseException], ...], Kind], ...] = (
    ((kerr.ProducerFencedError, kerr.InvalidProducerEpochError), "fenced"),
    ((kerr.UnknownMemberIdError, kerr.IllegalGenerationError, kerr.RebalanceInProgressError,
      kerr.FencedInstanceIdError, kerr.CommitFailedError, kerr.MemberIdRequiredError,
      kerr.FencedMemberEpochError, kerr.StaleMemberEpochError), "group_moved"),
    ((kerr.KafkaTimeoutError, kerr.RequestTimedOutError), "timed_out"),
    ((kerr.MessageSizeTooLargeError, kerr.RecordListTooLargeError, RecordTooLargeError),
     "too_large"),
    ((kerr.SaslAuthenticationFailedError, kerr.AuthorizationError,
      kerr.UnsupportedSaslMechanismError, kerr.IllegalSaslStateError), "auth"),
)
# What kafka-python's transaction manager treats as fatal whatever the broker version
# (TransactionManager._FATAL_ERRORS), plus a closed client.
_FATAL = (kerr.ProducerFencedError, kerr.TransactionalIdAuthorizationFailedError,
          kerr.ClusterAuthorizationFailedError, kerr.InvalidTxnStateError)


def cause_of(exc: BaseException) -> BaseException:
    """The error a generic kafka-python error wraps, if it says which (else `exc`).

    >>> type(cause_of(kerr.CommitFailedError(kerr.RebalanceInProgressError()))).__name__
    'RebalanceInProgressError'
    >>> type(cause_of(kerr.KafkaError(kerr.ProducerFencedError))).__name__
    'ProducerFencedError'
    """
    if type(exc) in (kerr.KafkaError, kerr.CommitFailedError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, type) and issubclass(inner, kerr.KafkaError):
            return inner()
        if isinstance(inner, kerr.KafkaError):
            return inner
    return exc


def kind_of(exc: BaseException) -> Kind:
    """What a kafka-python exception means for us (module docstring).

    >>> kind_of(kerr.IllegalGenerationError()), kind_of(kerr.KafkaTimeoutError())
    ('group_moved', 'timed_out')
    >>> kind_of(kerr.TopicAuthorizationFailedError()), kind_of(kerr.KafkaConnectionError())
    ('auth', 'other')
    """
    for candidate in (exc, cause_of(exc)):
        for classes, kind in _KINDS:
            if isinstance(candidate, classes):
                return kind
    return "other"


def client_error(exc: BaseException, fatal: bool | None = None,
                 what: str | None = None) -> ClientError:
    """`exc` as a ClientError; `fatal` when the caller knows better than the class, `what`
    to say which call failed.

    >>> e = client_error(kerr.ProducerFencedError())
    >>> e.kind, e.retriable, e.fatal, e.code
    ('fenced', False, True, 90)
    >>> e = client_error(kerr.KafkaTimeoutError("Failed to update metadata"), what="send")
    >>> e.kind, e.retriable, e.fatal, str(e)
    ('timed_out', True, False, 'send: KafkaTimeoutError: Failed to update metadata')
    """
    if isinstance(exc, ClientError):
        return exc
    cause = cause_of(exc)
    if fatal is None:
        fatal = isinstance(cause, _FATAL) or isinstance(exc, _FATAL)
    retriable = bool(getattr(exc, "retriable", False) or getattr(cause, "retriable", False))
    message = str(exc) if what is None else f"{what}: {exc}"
    code = getattr(cause, "errno", None) if isinstance(cause, kerr.BrokerResponseError) else None
    return ClientError(message, kind=kind_of(exc), retriable=retriable and not fatal,
                       fatal=fatal, code=code if code is not None else type(cause).__name__)


# Refused logins and failed TLS handshakes of every kafka-python client of this process.
WATCH = FailureWatch()
_REFUSED = (kerr.SaslAuthenticationFailedError, kerr.UnsupportedSaslMechanismError,
            kerr.IllegalSaslStateError)


class _Hearing(logging.Filter):
    """Keeps the refusals kafka-python only logs (module docstring); drops nothing.

    >>> record = logging.LogRecord("kafka.net.manager", logging.WARNING, "", 0,
    ...     "Bootstrap connection to %s failed: %s", ("bootstrap-0",
    ...     kerr.SaslAuthenticationFailedError("Invalid username or password")), None)
    >>> watch = FailureWatch()
    >>> _Hearing(watch).filter(record), watch.auth_failure()
    (True, 'SaslAuthenticationFailedError: Invalid username or password')
    """

    def __init__(self, watch: FailureWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        for arg in record.args if isinstance(record.args, tuple) else ():
            if isinstance(arg, _REFUSED):
                self.watch.saw_auth_failure(_broker_message(arg))
            elif isinstance(arg, kerr.KafkaConnectionError) and "andshake" in str(arg):
                self.watch.saw_tls_failure(str(arg))
        return True


def _broker_message(exc: BaseException) -> str:
    """What the broker said, without kafka-python's repeated class names.

    >>> _broker_message(kerr.SaslAuthenticationFailedError(
    ...     "SaslAuthenticationFailedError: Invalid username or password"))
    'SaslAuthenticationFailedError: Invalid username or password'
    >>> _broker_message(kerr.SaslAuthenticationFailedError())
    'SaslAuthenticationFailedError'
    """
    name = type(exc).__name__
    said = str(exc.args[0]) if exc.args else ""
    if said.startswith(f"{name}: "):
        said = said[len(name) + 2:]
    return f"{name}: {said}" if said else name


_HEARING = _Hearing(WATCH)
for _name in ("kafka.net.manager", "kafka.net.connection"):
    logging.getLogger(_name).addFilter(_HEARING)
