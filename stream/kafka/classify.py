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
- `auth`: authentication or authorisation failed: retrying will not help.
- `other`: anything else (connection refused, coordinator not available, ...).
"""

from __future__ import annotations

from typing import Literal

from stream.errors import (
    AuthenticationError,
    FencedError,
    FraudStreamError,
    GroupMovedError,
    InfrastructureError,
)

Kind = Literal["fenced", "group_moved", "timed_out", "in_progress", "too_large", "queue_full",
               "auth", "other"]


class ClientError(InfrastructureError):
    """A Kafka client call failed; `kind` says what that means for us (module docstring).

    >>> e = ClientError("Local: Timed out", kind="timed_out", retriable=True)
    >>> type(classify(e, "commit")).__name__, str(classify(e, "commit"))
    ('InfrastructureError', 'commit: Local: Timed out')
    >>> type(classify(ClientError("x", kind="other", fatal=True), "send")).__name__
    'FencedError'
    """

    def __init__(self, message: str, *, kind: Kind = "other", retriable: bool = False,
                 fatal: bool = False, code: object = None) -> None:
        super().__init__(message)
        self.kind: Kind = kind
        self.retriable = retriable
        self.fatal = fatal
        self.code = code


def classify(error: ClientError, what: str) -> FraudStreamError:
    """What the loop does about a failed call: stop (refused credentials; fenced, or any fatal
    client state other than a timeout), redo after a rebalance (group moved), or back off and
    rewind."""
    if error.kind == "auth":
        return AuthenticationError(f"{what}: {error}")
    if error.kind == "fenced" or (error.fatal and error.kind != "timed_out"):
        return FencedError(f"{what}: {error}")
    if error.kind == "group_moved":
        return GroupMovedError(f"{what}: {error}")
    return InfrastructureError(f"{what}: {error}")
