"""Kafka's default partitioner, reproduced: an in-process "P partitions" means what a consumer
group of P partitions sees."""

from __future__ import annotations

import random

from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import consumed_order, murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit Java ints)
JAVA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


def test_murmur2_matches_the_java_client() -> None:
    for text, signed in JAVA_VECTORS.items():
        assert murmur2(text.encode()) == signed & 0xFFFFFFFF, text


def test_murmur2_matches_kafka_python_on_random_keys() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        assert murmur2(key) == kafka_python_murmur2(key)


def test_partition_for_is_the_positive_hash_modulo() -> None:
    for n in (1, 4, 16):
        for i in range(200):
            key = f"card-{i:06d}".encode()
            assert partition_for(key, n) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % n


def test_consumed_order_keeps_each_partition_in_produce_order_and_merges_by_time() -> None:
    rng = random.Random(5)
    items: list[Transaction | Label] = []
    for i in range(500):
        t = float(i)
        items.append(Transaction(f"t{i}", f"card-{rng.randrange(50)}", "m", 1.0, t))
        if i % 3 == 0:  # a label for an earlier transaction, produced as it arrives
            items.append(Label(f"t{i // 2}", items[i // 2 * 1].card_id, False, t))
    out = list(consumed_order(items, 4))
    assert sorted(id(i) for _, i in out) == sorted(id(i) for i in items)
    times = [i.timestamp for _, i in out]
    assert times == sorted(times)
    for partition, item in out:
        assert partition == partition_for(item.card_id.encode(), 4)
    # at equal times, transactions first
    for (_, a), (_, b) in zip(out, out[1:], strict=False):
        if a.timestamp == b.timestamp:
            assert not (isinstance(a, Label) and isinstance(b, Transaction))
