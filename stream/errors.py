"""One root for every error the project raises on purpose.

A `FraudStreamError` is something a user can cause or fix: a bad setting, an unreachable or
refusing broker, a missing or corrupt file, a record that breaks the contract. The CLI catches
the root once and prints one `error: ...` line with the class's exit code; anything else is a
bug and keeps its traceback. Layers raise the subclass that says what went wrong; the classes
that belong to one module (the codec's `DecodeError`, the snapshot's `SnapshotError`, ...) are
defined there, on these bases.

>>> issubclass(ConfigError, FraudStreamError) and issubclass(ConfigError, ValueError)
True
>>> FencedError("another instance took over").exit_code
3
"""

from __future__ import annotations


class FraudStreamError(Exception):
    """Root of every deliberate error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(FraudStreamError, ValueError):
    """A setting, option, file or argument the user gave is wrong; the message says how."""


class InfrastructureError(FraudStreamError, RuntimeError):
    """Kafka is unreachable or refused an operation: retried where it can be, then one line."""


class FencedError(FraudStreamError):
    """Another instance owns our transactional id or our partitions: stop, never write."""

    exit_code = 3

    def __str__(self) -> str:
        return f"fenced by another instance, stopped without writing: {super().__str__()}"


class AuthenticationError(FraudStreamError):
    """The cluster refused our credentials or permissions: retrying will not help, the
    configuration must change."""


class GroupMovedError(FraudStreamError):
    """The consumer group rebalanced under a checkpoint: its work is redone by the owner."""


class OutputTooLargeError(InfrastructureError):
    """The client or the broker refused an output for its size (`max_message_bytes`, the
    topic's `max.message.bytes`): a problem of the input record that made it, never of the
    broker. The loop dead-letters that record (`output_too_large`) instead of retrying it."""
