"""One classification of Kafka client failures, whatever the client.

Each adapter turns its client's exceptions and error codes into a `ClientError` with a `kind`
(what it means for us) and the client's own retriable/fatal verdict. The delivery guarantees
and the loop decide on kinds only, so the same recovery logic runs on both clients:

- `fenced`: another producer owns our transactional id, or the group fenced this instance;
  stop without writing.
- `group_moved`: the group rebalanced under a checkpoint (unknown member, illegal
  generation, rebalance in progress): the new owner redoes the work.
- `timed_out`: the call's own timeout ran out; the operation may still complete.
- `in_progress`: a timed-out transaction commit is still going on; retry the commit, never
  abort it (librdkafka refuses that).
- `too_large`: the broker or the client refuses a record for its size: a data problem of that
  one record, never a reason to retry.
- `queue_full`: the client's local send queue is full: serve delivery reports and retry.
- `auth`: authentication (a SASL login, a TLS handshake) or authorisation failed: the
  configuration must change, retrying will not help.
- `other`: anything else (connection refused, coordinator not available, ...).

Neither client raises a refused login: both retry it until the call's own timeout, and the
call then fails as a timeout ("Unable to bootstrap") or a transport failure. What happened
reaches us beside the call (librdkafka's error callback, kafka-python's connection log), and
a `FailureWatch` keeps it, so the adapter can say "authentication failed" (or "TLS handshake
failed") instead of "cannot reach Kafka".
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from stream.errors import (
    AuthenticationError,
    FencedError,
    FraudStreamError,
    GroupMovedError,
    InfrastructureError,
    OutputTooLargeError,
)

Kind = Literal["fenced", "group_moved", "timed_out", "in_progress", "too_large", "queue_full",
               "auth", "other"]


class ClientError(InfrastructureError):
    """A Kafka client call failed; `kind` says what that means for us (module docstring).

    >>> e = ClientError("Local: Timed out", kind="timed_out", retriable=True)
    >>> type(classify(e, "commit")).__name__, str(classify(e, "commit"))
    ('InfrastructureError', 'commit: Local: Timed out')
    >>> type(classify(ClientError("x", kind="other", fatal=True), "send")).__name__
    'InfrastructureError'
    >>> type(classify(ClientError("fenced", kind="fenced", fatal=True), "send")).__name__
    'FencedError'
    >>> type(classify(ClientError("Message size too large", kind="too_large"), "send")).__name__
    'OutputTooLargeError'
    """

    def __init__(self, message: str, *, kind: Kind = "other", retriable: bool = False,
                 fatal: bool = False, code: object = None) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.retriable = retriable
        self.fatal = fatal
        self.code = code


def classify(error: ClientError, what: str) -> FraudStreamError:
    """What the loop does about a failed call: stop (refused credentials; fenced: another
    instance owns our transactional id), redo after a rebalance (group moved), dead-letter the
    input that made an output too large, or back off and rewind. A fatal error that is not a
    fence (librdkafka's "out of order sequence number" after a broker restart) makes the
    producer unusable, not the scorer: the rewind replaces the producer, whose
    initialisation aborts the old one's transaction, so exactly-once holds."""
    if error.kind == "auth":
        return AuthenticationError(f"{what}: {error}")
    if error.kind == "fenced":
        return FencedError(f"{what}: {error}")
    if error.kind == "group_moved":
        return GroupMovedError(f"{what}: {error}")
    if error.kind == "too_large":
        return OutputTooLargeError(f"{what}: {error}")
    return InfrastructureError(f"{what}: {error}")


def without_generation(group: object) -> ClientError:
    """The refusal of group metadata that carries no generation (module docstring of
    `stream.kafka.clients`, `GroupConsumer.group_metadata`).

    >>> e = without_generation("fraud-stream")
    >>> e.kind, type(classify(e, "transaction commit")).__name__
    ('group_moved', 'GroupMovedError')
    """
    return ClientError(f"this member of group {group!r} holds no generation (its session "
                       "expired, or it is rejoining): its partitions may belong to another "
                       "member, so it commits nothing", kind="group_moved")


class FailureWatch:
    """The last refused login and the last failed TLS handshake one client (or, for
    kafka-python, the process) reported on the side, to explain a call that then timed out.

    >>> watch = FailureWatch()
    >>> timeout = ClientError("Failed to get metadata: Local: Broker transport failure")
    >>> watch.explain(timeout) is timeout
    True
    >>> watch.saw_auth_failure("SASL authentication error: Authentication failed")
    >>> e = watch.explain(timeout)
    >>> e.kind, str(e)
    ('auth', 'authentication failed: SASL authentication error: Authentication failed')
    >>> watch.explain(timeout, since=time.monotonic() + 1) is timeout  # seen before the call
    True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._auth: tuple[float, str] | None = None
        self._tls: tuple[float, str] | None = None

    def saw_auth_failure(self, message: str) -> None:
        with self._lock:
            self._auth = (time.monotonic(), message)

    def saw_tls_failure(self, message: str) -> None:
        with self._lock:
            self._tls = (time.monotonic(), message)

    def auth_failure(self, since: float | None = None) -> str | None:
        """The refused login seen (after `since`, a time.monotonic() value), if any."""
        with self._lock:
            seen = self._auth
        return seen[1] if seen is not None and (since is None or seen[0] >= since) else None

    def explain(self, error: ClientError, since: float | None = None) -> ClientError:
        """`error` as what really happened: a timeout or transport failure that followed a
        refused login or a failed TLS handshake (after `since`) is that failure, of kind
        `auth`. Any other error is returned as it is."""
        if error.kind not in ("timed_out", "other"):
            return error
        with self._lock:
            auth, tls = self._auth, self._tls
        if auth is not None and (since is None or auth[0] >= since):
            return ClientError(f"authentication failed: {auth[1]}", kind="auth", code=error.code)
        if tls is not None and (since is None or tls[0] >= since):
            return ClientError(f"TLS handshake failed: {tls[1]} (is ssl_cafile the CA that "
                               "signed the broker's certificate?)", kind="auth",
                               code=error.code)
        return error
