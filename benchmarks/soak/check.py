"""The soak's accounting: every input record has exactly one verdict or one dead letter.

Read from the topics themselves once the run is over: the input topic is the ground truth
(what the broker holds, including any record a producer retry wrote twice), the verdicts and
dead letters are read `read_committed`, as a risk system would read them. An input record is
answered by a dead letter naming its offset, or else by a verdict for its `transaction_id`;
a transaction id sent twice (a duplicate) needs two verdicts, and both must carry the same
score (the second is the first verdict again, restored across restarts).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from stream.kafka.clients import Clients
from stream.kafka.records import BEGINNING, Record


@dataclass
class Accounting:
    """What came in and what came out, and the difference."""

    inputs: int = 0
    poison_inputs: int = 0
    duplicate_inputs: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicated: int = 0
    inconsistent_duplicates: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.inconsistent_duplicates == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def read_topic(clients: Clients, topic: str, idle_s: float = 10.0) -> Iterator[Record]:
    """Every record a read_committed reader reaches, partition by partition."""
    reader = clients.reader(bulk=True)
    try:
        for partition in reader.partitions(topic):
            source = (topic, partition)
            low, high = reader.watermarks(source, 30.0)
            if high <= low:
                continue
            reader.assign({source: BEGINNING})
            yield from _to_end(reader, source, high, idle_s)
    finally:
        reader.close()


def _to_end(reader: Any, source: tuple[str, int], high: int, idle_s: float) -> Iterator[Record]:
    last = time.monotonic()
    while True:
        polled = reader.poll(10_000, 0.5)
        for record in polled.records:
            yield record
            if record.next_offset >= high:
                return
        if polled.records:
            last = time.monotonic()
        if source in polled.at_end or time.monotonic() - last > idle_s:
            return


def transaction_id(value: bytes | None) -> str | None:
    """The id an input record carries, None when it is not a JSON object with one.

    >>> [transaction_id(v) for v in (b'{"transaction_id": "t1"}', b'{"a": 1', b"[]")]
    ['t1', None, None]
    """
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    tx_id = body.get("transaction_id") if isinstance(body, dict) else None
    return tx_id if isinstance(tx_id, str) else None


def account(clients: Clients, input_topic: str, verdict_topic: str, dlq_topic: str) -> Accounting:
    """Compare the topics; see the module docstring."""
    result = Accounting()
    letters: Counter[tuple[int, int]] = Counter()
    for record in read_topic(clients, dlq_topic):
        source = orjson.loads(record.value or b"{}").get("source") or {}
        if source.get("topic") == input_topic:
            letters[(int(source["partition"]), int(source["offset"]))] += 1
        result.dead_letters += 1
    expected: Counter[str] = Counter()
    for record in read_topic(clients, input_topic):
        result.inputs += 1
        tx_id = transaction_id(record.value)
        if tx_id is None:
            result.poison_inputs += 1
        if (record.partition, record.offset) in letters:
            continue
        if tx_id is None:
            result.lost += 1
            _example(result, f"poison {input_topic}[{record.partition}] {record.offset}: "
                             "no dead letter")
            continue
        expected[tx_id] += 1
    repeated = {tx_id for tx_id, n in expected.items() if n > 1}
    result.duplicate_inputs = sum(expected[tx_id] - 1 for tx_id in repeated)
    got: Counter[str] = Counter()
    scores: dict[str, set[float]] = {}
    for record in read_topic(clients, verdict_topic):
        verdict = orjson.loads(record.value or b"{}")
        tx_id = verdict["transaction_id"]
        got[tx_id] += 1
        result.verdicts += 1
        if tx_id in repeated:
            scores.setdefault(tx_id, set()).add(float(verdict["score"]))
    for tx_id, n in expected.items():
        if got[tx_id] < n:
            result.lost += n - got[tx_id]
            _example(result, f"{tx_id}: {got[tx_id]} verdicts for {n} inputs")
    for tx_id, n in got.items():
        if n > expected[tx_id]:
            result.duplicated += n - expected[tx_id]
            _example(result, f"{tx_id}: {n} verdicts for {expected[tx_id]} inputs")
    result.duplicated += sum(n - 1 for n in letters.values() if n > 1)
    result.inconsistent_duplicates = sum(len(s) > 1 for s in scores.values())
    return result


def _example(result: Accounting, line: str) -> None:
    if len(result.examples) < 10:
        result.examples.append(line)
