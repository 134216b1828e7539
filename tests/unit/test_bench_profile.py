"""The profile's categories follow the scorer's real call paths (py-spy collapsed stacks)."""

from __future__ import annotations

from benchmarks.bench.profile import JOIN, categorise

LOOP = "ScorerLoop.run (stream/serving/loop.py:120)"
POLL = "ScorerLoop._poll_once (stream/serving/loop.py:190)"
HANDLE = "RecordHandler.transaction (stream/serving/handlers.py:55)"


def _stack(*frames: str, n: int) -> str:
    return ";".join(("main (stream/cli/app.py:1)", LOOP, *frames)) + f" {n}"


def test_innermost_matching_frame_decides_and_only_loop_stacks_count() -> None:
    collapsed = "\n".join([
        _stack(POLL, HANDLE, "AtLeastOnce.send (stream/kafka/delivery.py:90)",
               "send_waiting (stream/kafka/delivery.py:60)", n=7),
        _stack(POLL, HANDLE, "Pipeline.score (stream/core/pipeline.py:200)",
               "learn_one (stream/core/scoring/model.py:60)", n=5),
        _stack(POLL, "RdkafkaGroupConsumer.poll (stream/kafka/rdkafka_consumer.py:99)", n=4),
        _stack(POLL, HANDLE, n=2),
        _stack("Checkpointer.commit (stream/serving/checkpoint.py:50)",
               "AtLeastOnce.commit (stream/kafka/delivery.py:100)", n=3),
        _stack(POLL, "RdkafkaGroupConsumer.poll (stream/kafka/rdkafka_consumer.py:99)",
               "<lambda> (stream/kafka/rdkafka_consumer.py:93)",
               "Rebalance.on_assigned (stream/serving/rebalance.py:70)",
               "Recovery.restore (stream/serving/recovery.py:110)", n=9),
        "Thread._bootstrap (threading.py:1002);"
        "BrokerProbe._run (stream/observability/lag.py:85) 50",
    ])
    counts, total = categorise(collapsed)
    assert total == 30  # the probe thread is not the loop
    assert counts["produce (client enqueue)"] == 7
    assert counts["model learn"] == 5
    assert counts["consume (fetched batch + wait)"] == 4
    assert counts["handler other (bookkeeping)"] == 2
    assert counts["checkpoint: commit (acks, offsets or transaction)"] == 3
    assert counts[JOIN] == 9
