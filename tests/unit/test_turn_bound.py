"""A turn of the loop processes at most `max_poll_records` records, however many the
event-time alignment lets go at once (serving/intake.py `Intake.release`).

A scorer started on a backlog holds its input while it waits for a labels partition to
report its end; when that comes, everything held is safe at once. Processed in one turn, those
records went without a checkpoint: on the real broker a SIGKILL 4,228-4,783 records into the
first release found nothing committed, and the successor scored them all again
(tests/integration/test_durability.py, at-least-once). The loop here runs on the in-memory
consumer and the transactional producer of loop_support.py: each committed transaction is
one checkpoint."""

from __future__ import annotations

from loop_support import LABELS, TX, Batches, Checkpoints, Clients, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


def test_a_release_of_the_whole_backlog_is_processed_and_checkpointed_a_turn_at_a_time(
) -> None:
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", max_events=1_000, changelog=False,
                             checkpoint_interval_ms=0.0, max_poll_records=100,
                             max_task_idle_ms=3_600_000, **PER_PARTITION)
    # The labels partition's end comes with the last transactions: until then the alignment
    # holds every transaction back.
    consumer = Batches(tx_records(1_000), [TX, LABELS])
    producer = Checkpoints()
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    result = loop.run()
    assert result.transactions == 1_000 and producer.offsets == {TX: 1_000}
    sizes = [size for size in producer.sizes if size]
    assert sum(sizes) == 1_000
    assert max(sizes) <= 100, sizes  # one checkpoint of all 1,000 without the bound
    assert result.alignment_timeouts == 0  # held, then released in order: not given up on
