"""What a group consumer knows of its own asynchronous offset commits, for both adapters.

Why: an at-least-once scorer that loses its group membership needs no rewind only when the
group holds the offsets it last committed (`AtLeastOnce.settled`), and an asynchronous
commit's answer arrives later, in a poll (librdkafka's `on_commit`, kafka-python's
callback), or never, when the client refused it outright.
"""

from __future__ import annotations


class AsyncCommits:
    """Asynchronous commits asked for whose answers are unheard, and whether the latest
    answer heard was a failure.

    >>> commits = AsyncCommits()
    >>> commits.asked(); commits.pending
    True
    >>> commits.heard(failed=True); commits.pending  # the group may not hold them
    True
    >>> commits.confirmed(); commits.pending  # a later synchronous commit returned
    False
    """

    __slots__ = ("_unheard", "_failed")

    def __init__(self) -> None:
        self._unheard = 0
        self._failed = False

    def asked(self) -> None:
        self._unheard += 1

    def withdrawn(self) -> None:
        """The client refused the commit outright: no answer will come."""
        self._unheard = max(0, self._unheard - 1)

    def heard(self, failed: bool) -> None:
        self._unheard = max(0, self._unheard - 1)
        self._failed = failed

    def confirmed(self) -> None:
        """A synchronous commit returned: the group holds later offsets than any failure's."""
        self._failed = False

    @property
    def pending(self) -> bool:
        return self._unheard > 0 or self._failed
