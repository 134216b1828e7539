"""`--max-events` counts work that is committed: a checkpoint that fails as the budget is
reached makes the loop rewind and redo that work before it returns, instead of returning a
result the rewind rolled back while the work itself was never committed.

The scorer's loop runs on stream.kafka.testing's in-memory consumer and producer, wrapped so
that a seek re-delivers from the offset sought (as a real consumer does after a rewind) and
so that what a committed transaction held can be read back."""

from __future__ import annotations

import orjson
from loop_support import TX, Clients, LogConsumer, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import Settings, load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Record
from stream.observability.metrics import Metrics
from stream.serving.loop import RunResult, ScorerLoop


def _settings(max_events: int, checkpoint_interval_ms: float) -> Settings:
    return load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                         output_topic="verdicts", max_events=max_events, changelog=False,
                         checkpoint_interval_ms=checkpoint_interval_ms, max_poll_records=3,
                         **PER_PARTITION)


def _run(fail_commits: set[int], checkpoint_interval_ms: float = 0.0,
         stop_at_poll: int | None = None) -> tuple[RunResult, TransactionalLog, list[Record]]:
    """Six transactions, a budget of six, polls of three; a checkpoint after every poll
    (`checkpoint_interval_ms=0`) or only the final one (a long interval); optionally asked
    to stop (SIGTERM) during a poll."""
    settings = _settings(6, checkpoint_interval_ms)
    records = tx_records(6)
    consumer = LogConsumer(records)
    producer = TransactionalLog(fail_commits)
    delivery = ExactlyOnce(lambda: producer, consumer, timeout_s=1.0)
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, delivery)
    if stop_at_poll is not None:
        consumer.on_poll = lambda polls: loop.stop() if polls == stop_at_poll else None
    return loop.run(), producer, records


def _ids(values: list[bytes | None]) -> list[str]:
    return [orjson.loads(v)["transaction_id"] for v in values if v is not None]


def test_the_budget_is_met_by_committed_work_only() -> None:
    result, producer, records = _run(fail_commits=set())
    assert result.transactions == 6
    assert producer.offsets == {TX: 6}
    assert sorted(_ids(producer.verdicts)) == sorted(_ids([r.value for r in records]))


def test_a_checkpoint_failing_as_the_budget_is_reached_is_redone_not_dropped() -> None:
    """The second checkpoint (records 3-5, the last of the budget) times out: the loop must
    rewind to offset 3 and score them again, not return with them rolled back."""
    result, producer, records = _run(fail_commits={2})
    assert result.recoveries == 1
    assert producer.offsets == {TX: 6}, "the run returned with work left uncommitted"
    assert result.transactions == 6
    ids = _ids(producer.verdicts)
    assert sorted(ids) == sorted(_ids([r.value for r in records]))  # each verdict once


def test_a_failed_final_checkpoint_is_redone_too() -> None:
    """No checkpoint falls due before the budget: the final one carries all six, and its
    commit times out. The rewind rolls the counts back to nothing: score them again."""
    result, producer, _ = _run(fail_commits={1}, checkpoint_interval_ms=3_600_000.0)
    assert result.recoveries == 1
    assert producer.offsets == {TX: 6}, "the run returned with work left uncommitted"
    assert result.transactions == 6 and len(_ids(producer.verdicts)) == 6


def test_a_stopped_run_whose_final_checkpoint_fails_returns_what_was_committed() -> None:
    """Asked to stop, the run does not redo anything: it returns, nothing of the failed
    checkpoint is committed, and the next start resumes from the committed offsets. (The
    result counts the inputs the run processed, each once: the Ledger's `high`.)"""
    result, producer, _ = _run(fail_commits={1}, checkpoint_interval_ms=3_600_000.0,
                               stop_at_poll=2)
    assert result.recoveries == 1
    assert producer.offsets == {} and producer.verdicts == []
