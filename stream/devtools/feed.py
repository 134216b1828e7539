"""A synthetic merchant feed, as the partitions' checkpoints would publish it, for the tests
and measurements of a rebuild from the feed (serving/merchant_feed.py).

Why not a scorer's run: a rebuild's cost is about the feed's shape (how many partitions, how
many events in a record, how far the partitions' event times run apart), and fabricating the
events directly gives any shape in a fraction of a second, reproducibly.

>>> records = synthetic_feed(partitions=2, transactions=40, names=3, publish_every=10)
>>> sorted(records), [len(r) for r in records.values()]
([0, 1], [5, 4])
"""

from __future__ import annotations

from typing import Any

from stream.core.features.merchant_table import MerchantTable, TableView
from stream.core.pipeline import Pipeline
from stream.serving.merchant_feed import feed_records

__all__ = ["folded", "synthetic_feed"]


def synthetic_feed(partitions: int, transactions: int, names: int, merchants: int = 50,
                   publish_every: int = 50, start: float = 1.7e9,
                   limit: int = 1_000_000) -> dict[int, list[bytes]]:
    """Each partition's feed records: `transactions` per partition, spread over `merchants`
    merchants, half a second of event time apart, the partitions' times interleaved; one in
    three has a delivered label (a fraud in ten of those) and a labelled example of `names`
    features; each partition publishes every `publish_every` transactions."""
    table = MerchantTable(partitions)
    views = [TableView(table, p, feed=True) for p in range(partitions)]
    records: dict[int, list[bytes]] = {p: [] for p in range(partitions)}

    def publish(view: TableView) -> None:
        drained = view.drain()
        if drained is not None:
            records[view.partition] += feed_records(*drained, limit=limit)

    for i in range(transactions * partitions):
        view, t, merchant = views[i % partitions], start + i * 0.5, f"m{i % merchants}"
        view.transaction(merchant, t)
        if i % 3 == 0:
            fraud = i % 30 == 0
            view.label(merchant, fraud, t)
            view.learn([float(i % 7) * 0.25] * names, fraud, t)
        if i % (publish_every * partitions) >= (publish_every - 1) * partitions:
            publish(view)
    for view in views:  # what the last round of transactions left
        publish(view)
    return records


def folded(pipeline: Pipeline) -> tuple[Any, ...]:
    """What a pipeline's shared table and champion hold (the frontier, every merchant's row,
    the events still queued, the champion's example count and weights): equal for any two
    folds of the same feed records, whatever order they arrived in."""
    table, timeline = pipeline.merchants, pipeline.timeline
    if table is None or timeline is None:
        raise ValueError("folded() needs the shared merchant table and champion")
    image = table.image()
    return (image.frontier, image.merchants, image.queued, timeline.learned,
            timeline.learner["LogisticRegression"].weights)
