"""A group member frozen past its session timeout that then commits a transaction, as the
scorer's thread does when a pause (a long GC, a stalled VM) lands mid-batch: run as a process
by test_zombie_member.py, which stops and continues it.

Usage: python zombie_member.py BOOTSTRAP CLIENT GROUP INPUT OUTPUT

It joins GROUP, reads the one record of INPUT and prints "joined". It then waits for a line
on stdin (the test freezes it meanwhile, past the session timeout, while a peer takes the
partition), gives its client's heartbeat a few seconds to find the session gone (the thread
does not poll: the lost partitions are only reported by the next poll), sends one record to
OUTPUT and commits the transaction with the record's offset, the way the scorer's delivery
does. It prints "committed", or "refused <error class>: <message>".
"""

from __future__ import annotations

import sys
import time

from kafka_adapters_support import Recorder  # this script's directory is on sys.path

from stream.config import load_settings
from stream.errors import FraudStreamError
from stream.kafka.clients import connect
from stream.kafka.delivery import ExactlyOnce

SETTLE_S = 4.0  # heartbeats every second: the expired session is seen well within this


def main(bootstrap: str, client: str, group: str, input_topic: str, output: str) -> str:
    settings = load_settings(environ={}, bootstrap_servers=bootstrap, kafka_client=client,
                             group_id=group, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
    clients = connect(settings)
    consumer = clients.group_consumer()
    consumer.subscribe([input_topic], Recorder())
    deadline = time.monotonic() + 60
    records = []
    while not records:
        if time.monotonic() > deadline:
            return "never got the input record"
        records = consumer.poll(10, 0.2).records
    delivery = ExactlyOnce(lambda: clients.producer(f"{group}-zombie"), consumer, 10.0)
    print("joined", flush=True)
    sys.stdin.readline()
    time.sleep(SETTLE_S)
    record = records[0]
    try:
        delivery.send(output, b"k", b"from the zombie")
        delivery.commit({record.source: record.offset + 1})
    except FraudStreamError as exc:
        delivery.reset()
        return f"refused {type(exc).__name__}: {exc}"
    return "committed"


if __name__ == "__main__":
    print(main(*sys.argv[1:6]), flush=True)
