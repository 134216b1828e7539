"""The soak's input: synthetic transactions at a steady rate, with a few duplicates and a few
poison records mixed in, produced from a background thread until told to stop.

A steady rate rather than a pre-filled topic: a soak is about what a long run does to the
scorer (memory, lag, recovery after faults), so the input must keep arriving through the
broker restart and while the scorer is down. The duplicates (a recent event sent again, as a
retrying payment service does) and the poison records (bytes that are not JSON) make the
accounting check both halves of "one verdict or one dead letter per input".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import orjson

from stream.devtools.synthetic import TrafficConfig, generate
from stream.errors import FraudStreamError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Clients
from stream.kafka.delivery import send_waiting

log = logging.getLogger("benchmarks.soak")

POISON = b'{"transaction_id": "poison", "amount": '  # cut short: invalid JSON


def is_duplicate_turn(i: int, every: int) -> bool:
    """Every `every`-th send repeats a recent event (0: never).

    >>> [i for i in range(1, 10) if is_duplicate_turn(i, 4)]
    [4, 8]
    """
    return every > 0 and i % every == 0


class SteadyTraffic:
    """Produce `rate` records a second to `topic` until `stop()`; counts what it sent."""

    def __init__(self, clients: Clients, topic: str, rate: float, seed: int = 5,
                 cards: int = 20_000, duplicate_every: int = 500,
                 poison_every: int = 2_000) -> None:
        self.clients = clients
        self.topic = topic
        self.rate = rate
        self.duplicate_every = duplicate_every
        self.poison_every = poison_every
        self._events = generate(TrafficConfig(count=None, days=3650.0, seed=seed,
                                              n_cards=cards))
        self._recent: deque[tuple[bytes, bytes]] = deque(maxlen=50)
        self.sent = {"transactions": 0, "duplicates": 0, "poison": 0}
        self.failed_deliveries = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop sending and wait until what was sent is acknowledged (or failed)."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"the soak's producer failed: {self.error}") from self.error

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def _delivered(self, error: ClientError | None) -> None:
        if error is not None:
            self.failed_deliveries += 1

    def _next(self, i: int) -> tuple[bytes, bytes, str]:
        if self.poison_every and i % self.poison_every == 0 and self._recent:
            return self._recent[-1][0], POISON, "poison"
        if is_duplicate_turn(i, self.duplicate_every) and self._recent:
            key, value = self._recent[len(self._recent) // 2]
            return key, value, "duplicates"
        event: dict[str, Any] = next(self._events)
        key, value = event["card_id"].encode(), orjson.dumps(event)
        self._recent.append((key, value))
        return key, value, "transactions"

    def _run(self) -> None:
        try:
            producer = self.clients.producer(linger_ms=5.0)
            started, i = time.monotonic(), 0
            while not self._stop.is_set():
                i += 1
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                key, value, kind = self._next(i)
                self._send(producer, key, value)
                self.sent[kind] += 1
                producer.poll(0)
            left = producer.flush(120.0)
            producer.close(10.0)
            if left:
                raise RuntimeError(f"{left} records still unacknowledged at the end")
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def _send(self, producer: Any, key: bytes, value: bytes) -> None:
        """Send, riding out a broker restart: a full queue only delays the traffic."""
        while True:
            try:
                send_waiting(producer, self.topic, key, value, on_delivery=self._delivered)
                return
            except (ClientError, FraudStreamError) as exc:
                log.warning("soak traffic: send failed (%s), retrying in 1 s", exc)
                time.sleep(1.0)
