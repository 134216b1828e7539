"""The Kafka clients' own log lines, rate-limited: an outage is worth a line, not a flood.

While a broker is down both clients retry by themselves, and say so on every attempt: librdkafka
("Connect to ipv4#127.0.0.1:9092 failed: Connection refused", per client and per broker
connection) and kafka-python ("<BrokerConnection ...>: connect attempt ... returned error 111").
About 540 such lines at ERROR in 30 seconds buried everything else in the log. The outage is
already reported once, by the broker probe (`fraudstream_broker_up`, `/readyz`) and by the loop.

`limit_client_logs()` routes the clients' loggers (and this package's, which reports per-poll
client errors) through one `RepeatLimiter`: a WARNING-or-above line passes once per `every_s`
for each (logger, level, text with its numbers masked); the repeats are counted and the next
line that passes says how many were held back. DEBUG and INFO lines are never held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

# kafka-python's loggers are children of "kafka"; librdkafka's lines reach "rdkafka" (the
# logger handed to confluent-kafka, rdkafka.py); the adapters log to "stream.kafka".
CLIENT_LOGGERS = ("kafka", "rdkafka", "stream.kafka")
DEFAULT_EVERY_S = 30.0
_NUMBERS = re.compile(r"\d+")
_MAX_KEYS = 1000


class RepeatLimiter(logging.Filter):
    """Let a repeated WARNING+ line through once per `every_s`; count the rest.

    >>> clock = [0.0]
    >>> limiter = RepeatLimiter(every_s=30.0, clock=lambda: clock[0])
    >>> def line(text: str) -> logging.LogRecord:
    ...     return logging.LogRecord("rdkafka", logging.ERROR, "", 0, text, (), None)
    >>> [limiter.filter(line(f"connect failed (after {ms}ms)")) for ms in (0, 1, 2)]
    [True, False, False]
    >>> limiter.filter(line("another message"))
    True
    >>> clock[0] = 31.0
    >>> record = line("connect failed (after 9ms)")
    >>> limiter.filter(record), record.getMessage()
    (True, 'connect failed (after 9ms) [2 similar lines held back in the last 31s]')
    """

    def __init__(self, every_s: float = DEFAULT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [time the last line passed, lines held back since]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, _NUMBERS.sub("#", text))
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.every_s:
                entry[1] += 1
                return False
            if entry is None and len(self._seen) >= _MAX_KEYS:
                self._forget(now)
            held, since = (int(entry[1]), entry[0]) if entry is not None else (0, now)
            self._seen[key] = [now, 0]
        if held:
            record.msg = (f"{text} [{held} similar line{'s' if held > 1 else ''} held back "
                          f"in the last {now - since:.0f}s]")
            record.args = ()
        return True

    def _forget(self, now: float) -> None:
        """Drop the keys whose window is over (all of them, if every one is recent)."""
        stale = [k for k, (at, _) in self._seen.items() if now - at >= self.every_s]
        for key in stale or list(self._seen):
            del self._seen[key]


class _Forward(logging.Handler):
    """Hands a client's records, once past the limiter, to the root logger's handlers, as
    propagation would have (the record keeps its logger name)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


_installed: tuple[RepeatLimiter, _Forward] | None = None
_install_lock = threading.Lock()


def limit_client_logs(every_s: float = DEFAULT_EVERY_S) -> RepeatLimiter:
    """Route the Kafka clients' loggers through one RepeatLimiter (idempotent; the first
    call's `every_s` stays). Returns the limiter.

    Every call checks the routing again: logging configured after the first call (a
    `logging.config.dictConfig`, which turns propagation back on for the loggers it names)
    would otherwise let every repeated line through again.
    """
    global _installed
    with _install_lock:
        if _installed is None:
            created, forward = RepeatLimiter(every_s), _Forward()
            forward.addFilter(created)
            _installed = (created, forward)
        limiter, handler = _installed
        for name in CLIENT_LOGGERS:
            logger = logging.getLogger(name)
            if handler not in logger.handlers:
                logger.addHandler(handler)
            logger.propagate = False
        return limiter
