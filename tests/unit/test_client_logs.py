"""The Kafka clients' reconnect lines during an outage: a few lines, not hundreds."""

from __future__ import annotations

import logging
import uuid

import pytest

from stream.config import load_settings
from stream.kafka.clients import connect
from stream.kafka.logs import CLIENT_LOGGERS, RepeatLimiter, limit_client_logs


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _flood(limiter: RepeatLimiter, clock: Clock, seconds: int, per_second: int = 18,
           ) -> list[str]:
    """An outage as both clients log it: ~540 lines in 30 s, numbers varying."""
    passed = []
    for second in range(seconds):
        for i in range(per_second):
            clock.now = second + i / per_second
            for name, text in (
                ("rdkafka", f"FAIL [thrd:127.0.0.1:9092/bootstrap]: Connect to ipv4#127.0.0.1:"
                            f"9092 failed: Connection refused (after {i}ms in state CONNECT)"),
                ("kafka.conn", f"<BrokerConnection node_id=bootstrap-{i % 2}>: connect attempt "
                               f"to 127.0.0.1:9092 returned error 111. Disconnecting."),
            ):
                record = logging.LogRecord(name, logging.ERROR, "", 0, text, (), None)
                if limiter.filter(record):
                    passed.append(record.getMessage())
    return passed


def test_an_outage_is_a_few_lines_not_hundreds() -> None:
    clock = Clock()
    limiter = RepeatLimiter(every_s=30.0, clock=clock)
    passed = _flood(limiter, clock, 30)
    assert len(passed) == 2  # one per client
    clock.now = 45.0  # the outage goes on: the next line says how many were held back
    record = logging.LogRecord("rdkafka", logging.ERROR, "", 0,
                               "FAIL [thrd:127.0.0.1:9092/bootstrap]: Connect to ipv4#127.0.0.1:"
                               "9092 failed: Connection refused (after 3ms in state CONNECT)",
                               (), None)
    assert limiter.filter(record)
    assert record.getMessage().endswith("[539 similar lines held back in the last 45s]")


def test_different_messages_and_debug_lines_are_never_held_back() -> None:
    limiter = RepeatLimiter(every_s=30.0, clock=Clock())
    texts = ["leader moved", "coordinator dead", "offset commit failed"]
    assert all(limiter.filter(logging.LogRecord("kafka.coordinator", logging.WARNING, "", 0,
                                                t, (), None)) for t in texts)
    debug = [logging.LogRecord("kafka.conn", logging.DEBUG, "", 0, "retry", (), None)
             for _ in range(10)]
    assert all(limiter.filter(r) for r in debug)


class _Seen(logging.Handler):
    """A handler on the root logger: what the process's own log handlers receive."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_clients_loggers_go_through_the_limiter(caplog: pytest.LogCaptureFixture) -> None:
    """Installed by connect(): what the clients log during an outage reaches the root
    handlers once, not once per attempt. Counted by a handler of this test's own on the root
    logger, not by caplog: in a whole-suite run pytest's capture handlers can also sit on the
    clients' loggers themselves (found on a clean-clone run after in-process CLI tests), where
    they see every record whatever reaches the root."""
    connect(load_settings(environ={}, bootstrap_servers="127.0.0.1:1"))
    limiter = limit_client_logs()
    assert limit_client_logs() is limiter  # idempotent
    caplog.set_level(logging.WARNING)
    for name in CLIENT_LOGGERS:  # the CLI mutes kafka-python unless --log-level DEBUG
        caplog.set_level(logging.WARNING, logger=name)
    seen = _Seen()
    root = logging.getLogger()
    root.addHandler(seen)
    try:
        unique = uuid.uuid4().hex  # the limiter is process-wide: a text no other test logged
        for name in ("kafka.conn", "rdkafka", "stream.kafka"):
            for attempt in range(200):
                logging.getLogger(name).error("connect to 127.0.0.1:1 failed (attempt %d) %s",
                                              attempt, unique)
    finally:
        root.removeHandler(seen)
    lines = [r for r in seen.records if r.name in ("kafka.conn", "rdkafka", "stream.kafka")]
    assert len(lines) == 3
    assert all(not logging.getLogger(name).propagate for name in CLIENT_LOGGERS)
