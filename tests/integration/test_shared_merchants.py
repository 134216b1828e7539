"""Merchant state over every partition's traffic, whatever the number of instances: two
`stream run` instances in one consumer group, sharing the merchant table through the merchant
feed, give every transaction exactly the score of one in-process pipeline owning all four
partitions (issue 12, "merchant state over all of a merchant's traffic").

Each instance scores the partitions the group gives it (usually two each; on a loaded machine
the first may have scored everything before the second joins, and the second then rebuilds
its table from what the first published) and holds its input back until the other's merchant
events are in; without the feed (`merchant_state = "partition"`) about 87% of the scores
differ. A restart (SIGKILL, rebalance) is covered by test_durability.py, whose bit-for-bit
comparisons run with the shared merchant table, the default.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from durability_support import (
    finish,
    group_positions,
    logged_process,
    make_topics,
    new_group,
    read_committed,
    stderr_of,
    wait_for,
)
from test_event_time import Recorder, replay_in_process

from stream.contracts.codec import decode_label, decode_transaction
from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import partition_for
from stream.devtools.producer import produce_events
from stream.devtools.synthetic import TrafficConfig, generate

COUNT = 6_000


def _start(bootstrap: str, kafka_client: str, group: str, flags: list[str],
           model_env: dict[str, str]) -> Any:
    return logged_process(
        [sys.executable, "-m", "stream", "--bootstrap-servers", bootstrap, "run",
         "--group-id", group, "--idle-exit", "10", "--session-timeout-ms", "30000", *flags],
        # A loaded machine can stall an instance (or a fetch) for seconds: waiting as long as
        # it takes keeps every read exact and the order of events fixed (the default waits,
        # 2 s each, then read stale or give up the order, counted in their metrics).
        {**os.environ, "FRAUDSTREAM_KAFKA_CLIENT": kafka_client,
         "FRAUDSTREAM_MERCHANT_STATE": "shared",
         "FRAUDSTREAM_MERCHANT_MAX_WAIT_MS": "60000", "FRAUDSTREAM_MAX_TASK_IDLE_MS": "60000",
         **model_env})


# The champion per partition, or one shared through the feed with 30 s epochs (the stream
# spans about five minutes of event time, labels two minutes late: ten model versions).
# Reads lag 60 s, not the default 300: within five minutes, most would read an empty table
# and an untrained champion, and agree with the replay without showing much.
SHORT = {"merchant_delta_s": 60.0}
MODELS = {"partition": SHORT,
          "shared": {**SHORT, "model_state": "shared", "model_epoch_s": 30.0}}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_instances_score_as_one_pipeline_owning_every_partition(
    kafka_bootstrap: str, kafka_client: str, clients: Any, new_topic: Callable[..., str],
    model: str,
) -> None:
    topics = make_topics(new_topic)
    # Dense traffic (about 20 transactions a second of event time over 1,000 cards and 100
    # merchants): each merchant's events land on every partition, so on both instances.
    config = TrafficConfig(COUNT, fraud_rate=0.05, seed=11, n_cards=1000, n_merchants=100,
                           mean_tx_per_card_per_day=1800.0)
    events = list(generate(config))
    recorder = Recorder(clients.producer(linger_ms=5.0))
    produce_events(recorder, events, topics.input, labels_topic=topics.labels,
                   label_delay_s=120.0, progress=False)
    recorder.producer.close(10.0)

    group = new_group()
    env = {f"FRAUDSTREAM_{name.upper()}": str(value) for name, value in MODELS[model].items()}
    first = _start(kafka_bootstrap, kafka_client, group, topics.flags(), env)
    time.sleep(1.0)
    second = _start(kafka_bootstrap, kafka_client, group, topics.flags(), env)
    outputs = [finish(p, timeout_s=400) for p in (first, second)]
    for code, stderr in outputs:
        assert code == 0, stderr[-3000:]
    for _, stderr in outputs:  # both joined, and each rebuilt its table from the feed
        assert stderr.count("merchant table rebuilt") >= 1, stderr[-3000:]

    verdicts: dict[str, list[float]] = {}
    for record in read_committed(kafka_bootstrap, topics.verdicts, COUNT, settle_s=1.5):
        body = orjson.loads(record.value)
        verdicts.setdefault(body["transaction_id"], []).append(body["score"])
    logs = "\n---\n".join(err[-6000:] for _, err in outputs)
    sent = [orjson.loads(value) for topic, value in recorder.sent if topic == topics.input]
    missing = Counter(partition_for(e["card_id"].encode(), 4) for e in sent
                      if e["transaction_id"] not in verdicts)
    assert not missing, (
        f"no verdict for {dict(missing)} (input partition: count); committed and end offsets "
        f"{group_positions(kafka_bootstrap, group, topics.input)}\n{logs}")
    assert all(len(scores) == 1 for scores in verdicts.values())  # exactly once

    items: list[Transaction | Label] = [
        decode_transaction(value) if topic == topics.input else decode_label(value)
        for topic, value in recorder.sent]
    expected, learned = replay_in_process(items, 4, merchant_state="shared", **MODELS[model])
    assert learned > COUNT // 2
    assert len(set(expected.values())) > COUNT // 2  # the champion learned (0.5 untrained)
    differing = [tx for tx, score in expected.items() if verdicts[tx] != [score]]
    assert differing == [], (f"{len(differing)} of {COUNT} scores differ, first "
                             f"{differing[:3]}\n{logs}")


BACKLOG = 4_000
OPEN_S = 2.0  # the backlog's transaction stays open this long before its commit
ASSIGNED = "partitions assigned: "


def _input_share(stderr: str, input_topic: str) -> int:
    """How many input partitions the instance's latest assignment holds."""
    lines = [line for line in stderr.splitlines() if ASSIGNED in line]
    return lines[-1].count(f"{input_topic}[") if lines else 0


@pytest.mark.parametrize("count", [1, 2])
def test_a_backlog_landing_at_once_is_scored_as_one_pipeline_would(
    kafka_bootstrap: str, kafka_client: str, clients: Any, new_topic: Callable[..., str],
    count: int,
) -> None:
    """Scorers sitting at the end of every partition are given a backlog at once (a
    producer transaction committing hours of events), and score it exactly as one
    in-process pipeline does.

    One instance: the client hands the burst out in several polls, the first holding one
    partition's records while the others' wait behind them. The ends of partition reported
    before the burst let that partition run hours of event time ahead of every label
    (3,798 of 4,000 scores differed, the shared champion untrained: serving/intake.py,
    tests/unit/test_intake.py). With kafka-python, whose adapter asks for the last stable
    offset of a partition held below its high watermark, an end asked while the backlog's
    transaction was open was reported again on every poll after the commit, and counted as
    news it let the first partition handed out run ahead all the same (3,890 of 4,000).

    Two instances move through it in step, each at most `merchant_delta_s -
    merchant_lateness_s` of event time past the other's published merchant frontier. A
    wait for the other must not run out while the other keeps moving: it ran out
    `merchant_max_wait_ms` after the first wait before (its clock ran while any owned
    partition had a record past the gate, which in a backlog is always), and the two then
    read merchant state stale (serving/loop.py `_merchant_gate`,
    tests/unit/test_gate_keeps_pace.py).

    The backlog is committed once the instances hold their share of the input partitions,
    so no rebalance falls inside it; sparse traffic (about 0.16 transactions a second of
    event time, seven hours) makes the lockstep last several times the 3 s wait allowed."""
    topics = make_topics(new_topic)
    group = new_group()
    # The merchant wait short, the idle clock of `_start` kept: the partitions sit idle
    # while the group settles, and an owned partition idle for `max_task_idle_ms` follows
    # the latest event time known, so one whose backlog came a moment after another's would
    # count it as late (README "State and delivery"), unlike the in-process replay.
    wait = {"FRAUDSTREAM_MERCHANT_MAX_WAIT_MS": "3000"}
    instances = [_start(kafka_bootstrap, kafka_client, group, topics.flags(), wait)
                 for _ in range(count)]
    wait_for(lambda: all(_input_share(stderr_of(p), topics.input) == 4 // count
                         for p in instances),
             120.0, f"each instance to hold {4 // count} input partitions")
    settled = [stderr_of(p).count(ASSIGNED) for p in instances]

    # In one transaction: the instances (read_committed) see the whole backlog at once, as
    # they would after an outage, not records arriving one by one while they score (which
    # would order labels by their arrival, unlike the replay).
    config = TrafficConfig(BACKLOG, fraud_rate=0.05, seed=13, n_cards=1000, n_merchants=100,
                           mean_tx_per_card_per_day=60.0)
    recorder = Recorder(clients.producer(transactional_id=f"backlog-{group}", linger_ms=5.0))
    recorder.producer.init_transactions(30.0)
    recorder.producer.begin_transaction()
    produce_events(recorder, list(generate(config)), topics.input,
                   labels_topic=topics.labels, label_delay_s=600.0, progress=False)
    # Open long enough for the scorers to see the partitions' high watermarks move and ask
    # for their last stable offsets (kafka-python's adapter), as a slow producer's would.
    time.sleep(OPEN_S)
    recorder.producer.commit_transaction(30.0)
    recorder.producer.close(10.0)

    outputs = [finish(p, timeout_s=400) for p in instances]
    logs = "\n---\n".join(err[-4000:] for _, err in outputs)
    for (code, stderr), before in zip(outputs, settled, strict=True):
        assert code == 0, stderr[-3000:]
        assert "merchant waits given up" not in stderr, logs
        assert stderr.count(ASSIGNED) == before, logs  # no rebalance inside the backlog
    verdicts: dict[str, list[float]] = {}
    for record in read_committed(kafka_bootstrap, topics.verdicts, BACKLOG, settle_s=1.5):
        body = orjson.loads(record.value)
        verdicts.setdefault(body["transaction_id"], []).append(body["score"])
    items: list[Transaction | Label] = [
        decode_transaction(value) if topic == topics.input else decode_label(value)
        for topic, value in recorder.sent]
    expected, _ = replay_in_process(items, 4, merchant_state="shared", model_state="shared")
    assert len(verdicts) == BACKLOG and all(len(v) == 1 for v in verdicts.values())
    differing = [tx for tx, score in expected.items() if verdicts[tx] != [score]]
    assert differing == [], (f"{len(differing)} of {BACKLOG} scores differ, first "
                             f"{[(tx, expected[tx], verdicts[tx]) for tx in differing[:3]]}"
                             f"\n{logs}")
