"""The sending side of `stream produce`: events to Kafka, with pacing, delayed labels and progress.

Two ways to send labels: `produce_events` takes events with the label inside and, with a
constant `label_delay_s`, moves each label to the labels topic (below); `produce_stream` sends a
stream that already interleaves transactions and their labels (the synthetic generator's
`generate_stream`, whose label delays follow a realistic distribution).

Why labels are delayed in event time: in production a transaction's outcome arrives days later
(chargebacks, analyst reviews) on the `labels` topic, and the scorer must cope with that. With
`label_delay_s` the label is stripped from each transaction and sent on the labels topic only once
the stream's event time (the largest timestamp sent so far) has passed the transaction time plus
the delay, so a replay exercises the same late-label path as production.

Records keep Kafka's own (wall-clock) record timestamp on purpose: stamping them with simulated
event times from the past would make time-based retention delete them as soon as they land.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from stream.contracts.codec import format_time, parse_timestamp
from stream.devtools.progress import progress_bar
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Producer

_PROGRESS_EVERY_S = 0.1


class ProduceError(InfrastructureError):
    """Some sends failed after the producer's own retries; `failed` says how many."""

    def __init__(self, failed: int, first: BaseException | None) -> None:
        super().__init__(f"{failed} message(s) could not be delivered; first error: {first!r}")
        self.failed = failed
        self.first = first


def _send(producer: Producer, topic: str, key: bytes | None, value: bytes,
          failures: _Failures) -> None:
    """Send one record; a full local queue is waited out (reports served meanwhile)."""
    producer.poll(0)  # serve the reports that are in: a failing broker stops the run early
    while True:
        try:
            producer.send(topic, key, value, on_delivery=failures)
            return
        except ClientError as exc:
            if exc.kind != "queue_full":
                raise ProduceError(1, exc) from None
            producer.poll(0.1)


@dataclass
class ProduceStats:
    """What a run sent: transactions (including raw records), labels, and wall-clock seconds."""

    sent: int
    labels_sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Transactions per second of wall-clock time."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def produce_events(
    producer: Producer,
    events: Iterable[dict[str, Any] | bytes],
    topic: str,
    *,
    rate: float | None = None,
    labels_topic: str | None = None,
    label_delay_s: float | None = None,
    progress: bool = True,
    total: int | None = None,
) -> ProduceStats:
    """Send every event to `topic` keyed by card_id, flush, and raise ProduceError on failures.

    Dict events are serialised with orjson; bytes (records a file replay could not parse) are sent
    unchanged with no key, so the scorer dead-letters them. `rate` paces sends smoothly in events
    per wall-clock second (None: as fast as possible). With `label_delay_s`, labels go to
    `labels_topic` as described in the module docstring; the rest are flushed at the end.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    if label_delay_s is not None:
        if labels_topic is None:
            raise ValueError("label_delay_s needs a labels_topic")
        if label_delay_s < 0:
            raise ValueError(f"label_delay_s must be >= 0, got {label_delay_s}")
    label_topic = labels_topic or ""  # only used when label_delay_s is set, and then required
    failures = _Failures()
    pending: list[tuple[float, int, bytes, bytes]] = []  # (due, seq, key, value)
    watermark = float("-inf")
    sent = labels_sent = 0
    started = time.perf_counter()
    pacer = _Pacer(rate)
    with progress_bar("produce", total, progress) as tick:
        for event in events:
            pacer.wait()
            if isinstance(event, bytes | bytearray):
                _send(producer, topic, None, bytes(event), failures)
                sent += 1
                tick(sent)
                continue  # raw bytes have no event time: the watermark stays put
            label = None
            if label_delay_s is not None:
                event, label, event_time = _split_label(event, label_delay_s)
                if event_time is not None:
                    watermark = max(watermark, event_time)
            card = event.get("card_id")
            key = card.encode() if isinstance(card, str) else None
            _send(producer, topic, key, orjson.dumps(event), failures)
            sent += 1
            if label is not None:
                heapq.heappush(pending, (label[0], sent, label[1], label[2]))
            while pending and pending[0][0] <= watermark:
                _, _, lkey, lvalue = heapq.heappop(pending)
                _send(producer, label_topic, lkey, lvalue, failures)
                labels_sent += 1
            failures.check()
            tick(sent)
        while pending:  # the stream ended: every outstanding label is now due
            _, _, lkey, lvalue = heapq.heappop(pending)
            _send(producer, label_topic, lkey, lvalue, failures)
            labels_sent += 1
        _flush(producer)
        tick(sent, True)
    failures.check()
    return ProduceStats(sent, labels_sent, time.perf_counter() - started)


def produce_stream(
    producer: Producer,
    records: Iterable[tuple[str, dict[str, Any], Any]],
    topic: str,
    labels_topic: str,
    *,
    rate: float | None = None,
    progress: bool = True,
    total: int | None = None,
) -> ProduceStats:
    """Send a merged stream of ("transaction", event, _) and ("label", label, _) records, as
    `stream.devtools.synthetic.generate_stream` yields them: transactions to `topic`, labels to
    `labels_topic`, in the given order, every record keyed by its card_id (UTF-8).

    The labels' timing is already decided by the stream (each comes when its event time is
    reached), so nothing is held back here. `rate` paces the transactions only; `total` is the
    expected number of transactions, for the progress bar. Raises ProduceError on failed sends.

    >>> from stream.kafka.testing import MemoryProducer
    >>> from stream.devtools.synthetic import TrafficConfig, generate_stream
    >>> fake = MemoryProducer()
    >>> stats = produce_stream(fake, generate_stream(TrafficConfig(5)), "tx", "lb", progress=False)
    >>> (stats.sent, stats.labels_sent), fake.sent[0][0], fake.sent[-1][0]
    ((5, 5), 'tx', 'lb')
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    failures = _Failures()
    sent = labels_sent = 0
    started = time.perf_counter()
    pacer = _Pacer(rate)
    with progress_bar("produce", total, progress) as tick:
        for kind, body, *_ in records:
            card = body.get("card_id")
            key = card.encode() if isinstance(card, str) else None
            if kind == "label":
                _send(producer, labels_topic, key, orjson.dumps(body), failures)
                labels_sent += 1
                failures.check()
                continue
            if kind != "transaction":
                raise ValueError(f"unknown record kind {kind!r}: transaction or label")
            pacer.wait()
            _send(producer, topic, key, orjson.dumps(body), failures)
            sent += 1
            failures.check()
            tick(sent)
        _flush(producer)
        tick(sent, True)
    failures.check()
    return ProduceStats(sent, labels_sent, time.perf_counter() - started)


def _split_label(
    event: dict[str, Any], delay_s: float
) -> tuple[dict[str, Any], tuple[float, bytes, bytes] | None, float | None]:
    """The event without `is_fraud`, its label as (due, key, value), and its event time.

    An event whose id, card or timestamp is unusable keeps its `is_fraud` and gets no label: it
    goes to the scorer as it is, to be dead-lettered there rather than half-fixed here.
    """
    try:
        event_time = parse_timestamp(event.get("timestamp"))
    except ValueError:
        return event, None, None
    tx_id, card = event.get("transaction_id"), event.get("card_id")
    outcome = _as_label(event.get("is_fraud"))
    if outcome is None or not isinstance(tx_id, str) or not isinstance(card, str):
        return event, None, event_time
    due = event_time + delay_s
    body = {"transaction_id": tx_id, "card_id": card, "is_fraud": outcome,
            "timestamp": format_time(due)}
    stripped = {k: v for k, v in event.items() if k != "is_fraud"}
    return stripped, (due, card.encode(), orjson.dumps(body)), event_time


def _as_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


class _Failures:
    """Delivery report that counts failed sends; `check` raises so a dead broker stops the
    run early."""

    def __init__(self) -> None:
        self.count = 0
        self.first: BaseException | None = None

    def __call__(self, error: ClientError | None) -> None:
        if error is None:
            return
        self.count += 1
        if self.first is None:
            self.first = error

    def check(self) -> None:
        if self.count:
            raise ProduceError(self.count, self.first)


def _flush(producer: Producer, timeout_s: float = 120.0) -> None:
    left = producer.flush(timeout_s)
    if left:
        raise ProduceError(left, TimeoutError(f"{left} records unacknowledged after "
                                              f"{timeout_s:.0f}s"))


class _Pacer:
    """Spaces sends 1/rate apart on a fixed schedule (smooth, not a burst each second).

    When sending falls more than a second behind, the schedule restarts instead of bursting to
    catch up.
    """

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.origin = 0.0
        self.n = 0

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.perf_counter()
        if self.n == 0:
            self.origin = now
        ahead = self.origin + self.n * self.interval - now
        if ahead > 0.0005:
            time.sleep(ahead)
        elif ahead < -1.0:
            self.origin, self.n = now, 0
        self.n += 1
