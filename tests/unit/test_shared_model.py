"""One champion over every partition's labels (model_state "shared", scoring/timeline.py),
without a broker: two instances that exchange merchant-feed records (JSON, as on the topic)
score every transaction exactly as one pipeline owning all partitions, and the shared model
reads as of its epoch, whatever the arrival order of the examples."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import orjson
import pytest
from keys_support import KEY

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import consumed_order, partition_for
from stream.core.pipeline import Pipeline
from stream.core.scoring.model import ModelSpec, score_one
from stream.core.scoring.timeline import ModelTimeline
from stream.devtools.synthetic import TrafficConfig, generate
from stream.state.merchant_feed import decode_feed, encode_feed

PARTITIONS = 4
SHARED = {"merchant_state": "shared", "model_state": "shared", "model_epoch_s": 600.0,
          "warmup_labels": 0}


def _items(count: int = 3000, seed: int = 5) -> list[Transaction | Label]:
    """Dense traffic (every merchant on every partition) and labels 300 s later."""
    config = TrafficConfig(count, fraud_rate=0.05, seed=seed, n_cards=400, n_merchants=30,
                           mean_tx_per_card_per_day=300.0)
    items: list[Transaction | Label] = []
    labels: list[Label] = []
    for event in generate(config):
        tx = decode_transaction(orjson.dumps(event))
        items.append(replace(tx, is_fraud=None))
        labels.append(Label(tx.transaction_id, tx.card_id, bool(tx.is_fraud),
                            tx.timestamp + 300.0))
    return sorted(items + labels, key=lambda i: i.timestamp)


def _pipeline(owned: int | None, **extra: object) -> Pipeline:
    settings = load_settings(environ={}, **{**SHARED, **extra})
    return Pipeline(pipeline_config(settings, KEY), model_version(settings),
                    merchant_partitions=PARTITIONS, merchant_feed=owned is not None)


class _Heads:
    """Each partition's next record time (what the live intake knows from its fetches)."""

    def __init__(self, items: list[Transaction | Label]) -> None:
        self.times: dict[int, list[float]] = {}
        for item in items:
            p = partition_for(item.card_id.encode(), PARTITIONS)
            self.times.setdefault(p, []).append(item.timestamp)
        self.at = dict.fromkeys(self.times, 0)

    def head(self, p: int) -> float:
        times, i = self.times.get(p, []), self.at.get(p, 0)
        return times[i] if i < len(times) else math.inf


def _replay(items: list[Transaction | Label], owner: dict[int, Pipeline],
            before_each: Callable[[int, _Heads], None] = lambda n, heads: None,
            order: list[tuple[int, Transaction | Label]] | None = None) -> dict[str, float]:
    """Every record, in the order one scorer owning all partitions processes them (or
    `order`), by the pipeline that owns its partition (`owner`, which `before_each` may
    change); `before_each(n, heads)` runs before the n-th record."""
    heads, scores = _Heads(items), {}
    for p in range(PARTITIONS):
        owner[p].lookahead(p, heads.head(p))
    records = order if order is not None else list(consumed_order(items, PARTITIONS))
    for n, (p, item) in enumerate(records):
        before_each(n, heads)
        pipe = owner[p]
        if isinstance(item, Transaction):
            scores[item.transaction_id] = pipe.score(item, p).score
        else:
            pipe.learn_label(item)
        heads.at[p] += 1
        pipe.lookahead(p, heads.head(p))
    for pipe in set(owner.values()):
        assert pipe.merchants is not None and pipe.merchants.stale_reads == 0
    return scores


def _one_pipeline(items: list[Transaction | Label], **extra: object) -> dict[str, float]:
    return _replay(items, dict.fromkeys(range(PARTITIONS), _pipeline(None, **extra)))


def _two_instances(items: list[Transaction | Label]) -> dict[str, float]:
    """Instance A owns partitions 0 and 1, B owns 2 and 3; before each record, every
    outstanding feed record goes to the other instance through the feed's JSON."""
    a, b = _pipeline(0), _pipeline(2)
    owner = {0: a, 1: a, 2: b, 3: b}
    for p, pipe in owner.items():
        pipe.assign(p)

    def exchange(n: int, heads: _Heads) -> None:
        for p, pipe in owner.items():
            drained = pipe.drain_feed(p)
            if drained is not None:
                record = decode_feed(encode_feed(*drained))
                other = b if pipe is a else a
                other.apply_feed(p, record.first_seq, record.events, record.mark,
                                 record.stream_time)

    scores = _replay(items, owner, exchange)
    for pipe in (a, b):
        assert pipe.timeline is not None and pipe.timeline.rejected == 0
    return scores


def test_two_instances_score_exactly_as_one_pipeline_owning_every_partition() -> None:
    items = _items()
    one, two = _one_pipeline(items), _two_instances(items)
    assert len(one) == 3000 and one == two
    # The model did learn (across partitions): scores move away from the untrained 0.5.
    assert sum(1 for s in one.values() if abs(s - 0.5) > 0.05) > 1000


def test_per_partition_models_would_differ() -> None:
    """The control: with a model per partition, the same traffic scores differently (the
    test above would catch a shared model that is not used)."""
    items = _items()
    shared = _one_pipeline(items)
    separate = _one_pipeline(items, model_state="partition")
    assert sum(1 for k in shared if shared[k] != separate[k]) > 1000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_read_is_the_model_of_the_examples_before_its_epoch_in_any_arrival_order(
        seed: int) -> None:
    """Examples are folded in effective-time order (the table's job); a read at cutoff c
    equals a model trained on exactly the examples before c's epoch."""
    rng = random.Random(seed)
    names = ("amount_log", "card_count_1d")
    examples = sorted((rng.uniform(0, 5000), (float(rng.random() < 0.2), rng.gauss(3, 1),
                                              rng.gauss(1, 1))) for _ in range(300))
    timeline = ModelTimeline(ModelSpec(), names, epoch_s=500.0)
    for eff, example in examples:
        timeline.learn(eff, example)
    probe = {"amount_log": 4.0, "card_count_1d": 2.0}
    for cutoff in (0.0, 499.0, 500.0, 1234.5, 4999.0, 7000.0):
        start = math.floor(cutoff / 500.0) * 500.0
        batch = ModelTimeline(ModelSpec(), names, epoch_s=500.0)
        for eff, example in examples:
            if eff < start:
                batch.learn(eff, example)
        model, learned = timeline.at(cutoff)
        assert learned == batch.learned
        assert score_one(model, probe) == score_one(batch.learner, probe)


def test_released_copies_go_and_a_reset_starts_over() -> None:
    timeline = ModelTimeline(ModelSpec(), ("amount_log",), epoch_s=10.0)
    for i in range(100):
        timeline.learn(float(i), (0.0, 1.0))
    assert timeline.copies == 10
    timeline.release(55.0)
    assert timeline.copies == 5 and timeline.at(55.0)[1] == 50
    # A read before every copy kept gets the oldest (not, by wrapping around, the newest),
    # counted: release promises it never happens.
    assert timeline.at(5.0)[1] == 50 and timeline.too_old == 1
    timeline.learn(200.0, (1.0,))  # another width: refused, counted
    assert timeline.rejected == 1
    timeline.reset()
    assert (timeline.learned, timeline.copies) == (0, 0)


def test_copies_score_as_score_one_and_their_scorers_go_with_them() -> None:
    """The epoch copies score through frozen scorers (`ModelTimeline.score`), exactly as
    `score_one`; a released copy's scorer goes too, so a long run holds no dead copies."""
    names = ("amount_log", "card_count_1d")
    timeline = ModelTimeline(ModelSpec(), names, epoch_s=10.0)
    probe = {"amount_log": 4.0, "card_count_1d": 2.0}
    for i in range(2000):
        timeline.learn(float(i), (float(i % 7 == 0), float(i % 13), float(i % 5)))
        model, _ = timeline.at(i - 15.0)
        assert timeline.score(model, probe) == score_one(model, probe)
        timeline.release(i - 30.0)
        assert len(timeline._scorers) <= timeline.copies + 17
    assert timeline.score(timeline.learner, probe) == score_one(timeline.learner, probe)
    timeline.reset()
    assert not timeline._scorers


def test_settings_refuse_a_shared_model_without_the_shared_table() -> None:
    # The shared champion is the default: going back to per-partition merchant state alone,
    # or asking for promotion, says which setting to change.
    with pytest.raises(ValueError, match="set model_state = 'partition' too"):
        load_settings(environ={}, merchant_state="partition")
    with pytest.raises(ValueError, match="set model_state = 'partition' to promote"):
        load_settings(environ={}, promotion_metric="roc_auc")
    assert load_settings(environ={}, merchant_state="partition", model_state="partition",
                         promotion_metric="roc_auc").promotion_metric == "roc_auc"


def test_instances_started_from_one_snapshot_score_alike_and_are_ready_at_once() -> None:
    """README "Migration: shared state as the default": a trained snapshot (here `train`'s, as
    `stream train` or `replay --single-model --out` write it) starts the shared champion on
    every instance; each is ready at once, and instances owning different partitions score
    a transaction alike (as one pipeline owning both would)."""
    from stream.batch.train import train

    settings = load_settings(environ={}, warmup_labels=500)
    assert settings.model_state == "shared"  # the default
    config = pipeline_config(settings, KEY)
    history = [(0, item, None) for item in _items(2400, seed=9)]
    snapshot = train(iter(history), config, "warm").snapshot
    assert snapshot.learned >= 500
    later = [replace(i, timestamp=i.timestamp + 86400.0) for i in _items(200, seed=10)
             if isinstance(i, Transaction)]
    scores = []
    for owned in (0, 2):
        pipe = Pipeline(config, "warm", init_from=snapshot, merchant_partitions=PARTITIONS,
                        merchant_feed=True)
        pipe.assign(owned)
        first = pipe.score(replace(later[0], transaction_id="probe"), owned)
        assert first.model_state == "ready"
        scores.append(first.score)
    fresh = Pipeline(config, "fresh", merchant_partitions=PARTITIONS)
    assert scores[0] == scores[1] != fresh.score(replace(later[0], transaction_id="probe"),
                                                 0).score
