"""Drift alarms, measured (`make quality`, or `python -m benchmarks.quality.drift` alone).

Two questions, on the synthetic stream of the quality benchmark (realistic fraud scenarios at
0.8%, labels days to weeks late) and the in-process scorer with its default settings:

- How often does a stationary month raise an alarm? The stream is stationary by construction
  (fraud incidents come and go at constant rates), so every alarm in it is a false alarm.
  Measured at 1 and 4 partitions.
- How long does an injected change take to raise one? Measured in event time, in decisions
  and in labels of decisions made after the change, for each alarm kind (`loss`: fraud getting
  through, from labels; `psi`: the decision mix, from scores).

The protocol: `warmup_days` of traffic first, in which the model learns from a cold start (its
first labels arrive after days, and it needs weeks to settle); then the drift detectors are
restarted, as a restart or a rebalance of the scorer does (the model, the features and the
decision-time records keep everything), and the month is observed. A change is injected
`change_after_days` into the month and observed for the rest of it; before it the stream is
exactly the stationary one (so one scorer runs that far, and copies of it continue). Alarms
during the cold start are reported apart (`cold_start_alarms`): a model that learns from
nothing does change, fast.

The changes:
- `new_pattern`: from the change on, compromised cards are also used at the cardholder's own
  merchants, at the cardholder's usual amounts (x1.0-1.3), adding `new_pattern_rate` of the
  traffic as fraud (as much again as the usual 0.8%: fraud doubles), fraud the model cannot
  see in the transaction.
- `amounts_x10`: from the change on, every amount is ten times what it was (a producer that
  switched to minor units, or to another currency): the model sees anomalies everywhere.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stream.assembly import model_version, oversight_config, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_label, decode_transaction, parse_timestamp
from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import consumed_order
from stream.core.evaluation.drift import LossDrift, ScorePSI, decision_edges
from stream.core.pipeline import Pipeline
from stream.devtools.synthetic import TrafficConfig, generate_stream, parse_scenarios
from stream.devtools.traffic.engine import Simulation
from stream.devtools.traffic.scenarios import CompromisedCard

DAY_S = 86400.0
KINDS = ("loss", "psi")
CHANGES = ("new_pattern", "amounts_x10")
Record = tuple[str, dict[str, Any], str | None]


@dataclass(frozen=True)
class DriftProtocol:
    """The streams and periods of the drift benchmark (see the module docstring)."""

    seed: int = 7
    cards: int = 3000
    merchants: int = 1500
    tx_per_card_per_day: float = 1.0
    fraud_rate: float = 0.008
    scenario: str = "realistic"
    warmup_days: float = 28.0
    month_days: float = 30.0
    change_after_days: float = 10.0
    new_pattern_rate: float = 0.008
    amount_factor: float = 10.0

    def traffic(self, days: float) -> TrafficConfig:
        return TrafficConfig(None, days=days, fraud_rate=self.fraud_rate, seed=self.seed,
                             n_cards=self.cards, n_merchants=self.merchants,
                             mean_tx_per_card_per_day=self.tx_per_card_per_day,
                             scenarios=parse_scenarios(self.scenario))

    @property
    def days(self) -> float:
        """The whole stream: the warm-up and the month."""
        return self.warmup_days + self.month_days

    @property
    def change_day(self) -> float:
        return self.warmup_days + self.change_after_days


# -- the streams ------------------------------------------------------------------------------
def _by_time(record: Record) -> str:
    return str(record[1]["timestamp"])  # RFC 3339, one format: sorts as text


def stationary(protocol: DriftProtocol, days: float) -> Iterator[Record]:
    return generate_stream(protocol.traffic(days))


def new_pattern(protocol: DriftProtocol, days: float) -> Iterator[Record]:
    """The stationary stream, and from the change on the fraud of a second simulation of the
    same population (same seed, same cards and merchants) that runs the new pattern alone."""
    base = protocol.traffic(days)
    sim = Simulation(base)
    change = sim.start + protocol.change_day * DAY_S
    quiet = CompromisedCard(amount_min=1.0, amount_max=1.3)
    per_day = quiet.expected_per_day(sim.pop)
    wanted = protocol.new_pattern_rate / (1 - protocol.new_pattern_rate) * sim.pop.total_rate
    extra = replace(base, fraud_rate=None, scenarios=(
        replace(quiet, per_day=quiet.per_day * wanted / per_day),))
    kept: set[str] = set()

    def injected() -> Iterator[Record]:
        for kind, body, pattern in generate_stream(extra):
            if pattern is None:
                continue  # the legitimate traffic is the same as the base stream's
            body = {**body, "transaction_id": "new-" + body["transaction_id"]}
            if kind == "transaction":
                if parse_timestamp(body["timestamp"]) < change:
                    continue
                kept.add(body["transaction_id"])
            elif body["transaction_id"] not in kept:
                continue
            yield kind, body, "new_pattern"

    return heapq.merge(generate_stream(base), injected(), key=_by_time)


def amounts_x10(protocol: DriftProtocol, days: float) -> Iterator[Record]:
    """The stationary stream, every amount from the change on multiplied by the factor."""
    base = protocol.traffic(days)
    change = base.start_time.timestamp() + protocol.change_day * DAY_S
    for kind, body, pattern in generate_stream(base):
        if kind == "transaction" and parse_timestamp(body["timestamp"]) >= change:
            body = {**body, "amount": round(body["amount"] * protocol.amount_factor, 2)}
        yield kind, body, pattern


STREAMS: dict[str, Callable[[DriftProtocol, float], Iterable[Record]]] = {
    "stationary": stationary, "new_pattern": new_pattern, "amounts_x10": amounts_x10}


def decoded(records: Iterable[Record]) -> list[Transaction | Label]:
    """Records through the scorer's own codec, exactly as they would be read from Kafka."""
    out: list[Transaction | Label] = []
    for kind, body, _pattern in records:
        value = orjson.dumps(body)
        out.append(decode_transaction(value) if kind == "transaction" else decode_label(value))
    return out


# -- one pass -------------------------------------------------------------------------------
@dataclass(slots=True)
class Alarm:
    """One drift event, with what the partition had seen of the change when it fired."""

    kind: str
    partition: int
    at: float
    value: float
    reference: float
    decisions_since_change: int = 0
    labels_since_change: int = 0
    fraud_labels_since_change: int = 0


@dataclass(slots=True)
class DriftRun:
    """Every alarm of one pass, and what was observed."""

    stream: str
    partitions: int
    start: float
    restart: float
    end: float
    change: float | None
    alarms: list[Alarm] = field(default_factory=list)
    decisions: int = 0
    labels: int = 0
    fraud_labels: int = 0
    seconds: float = 0.0
    # The same detectors never restarted, so still carrying the cold start: alarms by kind.
    unrestarted: list[tuple[str, float]] = field(default_factory=list)


Ordered = list[tuple[int, Transaction | Label]]


def ordered(protocol: DriftProtocol, stream: str, partitions: int) -> Ordered:
    """The stream's records, decoded, in the order a scorer owning `partitions` reads them;
    labels that would arrive after the month are left out."""
    end = protocol.traffic(protocol.days).start_time.timestamp() + protocol.days * DAY_S
    items = [item for item in decoded(STREAMS[stream](protocol, protocol.days))
             if item.timestamp < end]
    return list(consumed_order(items, partitions))


def split(records: Ordered, at: float) -> int:
    """Where the records of event time `at` and later begin (records are in time order)."""
    i = next((i for i, (_, item) in enumerate(records) if item.timestamp >= at), len(records))
    assert all(item.timestamp >= at for _, item in records[i:]), "records out of time order"
    return i


class Pass:
    """The scorer, with its default settings, over a stream: the drift detectors restarted after
    the warm-up, every alarm recorded with the change's decisions and labels its partition had
    seen. `feed` may be called in steps, and a forked copy continued on another stream.

    Beside the scorer's own detectors, a second set with the same settings is fed the same
    scores and labels but never restarted: what the alarms would be had the scorer run on
    since its cold start.
    """

    def __init__(self, protocol: DriftProtocol, partitions: int) -> None:
        # Per-partition state, as the drift figures have been measured since the alarm
        # work (the shared table and champion, the scorer's default since, are not yet
        # measured here: docs/quality.md).
        settings = load_settings(environ={}, merchant_state="partition",
                                 model_state="partition")
        self.pipeline = Pipeline(pipeline_config(settings), model_version(settings))
        start = protocol.traffic(protocol.days).start_time.timestamp()
        self.partitions = partitions
        self.start, self.end = start, start + protocol.days * DAY_S
        self.restart = start + protocol.warmup_days * DAY_S
        self.change = start + protocol.change_day * DAY_S
        self.alarms: list[Alarm] = []
        self.decisions = self.labels = self.fraud_labels = 0
        self.seconds = 0.0
        self._restarted = False
        self._counted = 0
        self._after: set[str] = set()
        self._since: dict[int, list[int]] = {}  # partition: decisions, labels, fraud labels
        self.unrestarted: list[tuple[str, float]] = []
        config = self.pipeline.config
        self._oversight = config.oversight
        self._edges = decision_edges(config.policy.review_threshold,
                                     config.policy.decline_threshold)
        self._scores: dict[str, float] = {}
        self._loss: dict[int, LossDrift] = {}
        self._psi: dict[int, ScorePSI] = {}

    def feed(self, records: Iterable[tuple[int, Transaction | Label]]) -> None:
        pipeline, oversight, change = self.pipeline, self.pipeline.oversight, self.change
        started = time.perf_counter()
        for partition, item in records:
            if not self._restarted and item.timestamp >= self.restart:
                for p in list(pipeline.partitions):
                    oversight.forget(p)
                self._restarted = True
            if isinstance(item, Transaction):
                score = pipeline.score(item, partition).score
                self._shadow_decided(partition, item, score)
                self.decisions += self._restarted
                if item.timestamp >= change:
                    self._after.add(item.transaction_id)
                    self._since.setdefault(partition, [0, 0, 0])[0] += 1
            elif pipeline.learn_label(item) == "learned":
                self._shadow_labelled(partition, item)
                if self._restarted:
                    self.labels += 1
                    self.fraud_labels += item.is_fraud
                    if item.transaction_id in self._after:
                        since = self._since.setdefault(partition, [0, 0, 0])
                        since[1] += 1
                        since[2] += item.is_fraud
            total = sum(oversight.drift_counts.values())
            if total > self._counted:
                for e in list(oversight.recent_drift)[self._counted - total:]:
                    since = self._since.get(e.partition, [0, 0, 0])
                    self.alarms.append(Alarm(e.kind, e.partition, e.at, e.value, e.reference,
                                             *since))
                self._counted = total
        self.seconds += time.perf_counter() - started

    def _shadow_decided(self, partition: int, tx: Transaction, score: float) -> None:
        self._scores[tx.transaction_id] = score
        psi = self._psi.get(partition)
        if psi is None:
            c = self._oversight
            psi = self._psi[partition] = ScorePSI(c.psi_reference, c.psi_window, self._edges,
                                                  c.psi_threshold, c.psi_warmup)
        psi.update(score, tx.timestamp)
        if psi.detected is not None:
            self.unrestarted.append(("psi", tx.timestamp))

    def _shadow_labelled(self, partition: int, label: Label) -> None:
        score = self._scores.pop(label.transaction_id, None)
        if score is None:
            return
        loss = self._loss.get(partition)
        if loss is None:
            c = self._oversight
            loss = self._loss[partition] = LossDrift(c.drift_delta, c.drift_min_labels)
        loss.update(label.is_fraud, score, label.timestamp)
        if loss.detected is not None:
            self.unrestarted.append(("loss", label.timestamp))

    def result(self, stream: str) -> DriftRun:
        return DriftRun(stream, self.partitions, self.start, self.restart, self.end,
                        None if stream == "stationary" else self.change, self.alarms,
                        self.decisions, self.labels, self.fraud_labels, self.seconds,
                        self.unrestarted)


def run_stream(protocol: DriftProtocol, stream: str, partitions: int) -> DriftRun:
    """One whole pass over one stream."""
    one = Pass(protocol, partitions)
    one.feed(ordered(protocol, stream, partitions))
    return one.result(stream)


# -- the report -----------------------------------------------------------------------------
def _counts(alarms: Iterable[Alarm]) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for a in alarms:
        out[a.kind] = out.get(a.kind, 0) + 1
    return out


def _counts_at(alarms: Iterable[tuple[str, float]], since: float) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for kind, at in alarms:
        if at >= since:
            out[kind] = out.get(kind, 0) + 1
    return out


def summarise(protocol: DriftProtocol, runs: list[DriftRun]) -> dict[str, Any]:
    """The JSON report: false alarms per stationary month, and each change's first alarm of
    each kind (None: not detected by the end of the month)."""
    report: dict[str, Any] = {"protocol": asdict(protocol), "stationary": {}, "changes": {}}
    for run in runs:
        cold = _counts(a for a in run.alarms if a.at < run.restart)
        watched = [a for a in run.alarms if a.at >= run.restart]
        if run.change is None:
            months = (run.end - run.restart) / (30 * DAY_S)
            alarms = _counts(watched)
            report["stationary"][f"p{run.partitions}"] = {
                "alarms": alarms,
                "false_alarms_per_month": {k: round(v / months, 2) for k, v in alarms.items()},
                "days": round((run.end - run.restart) / DAY_S, 1),
                "decisions": run.decisions, "labels": run.labels,
                "fraud_labels": run.fraud_labels, "cold_start_alarms": cold,
                "alarms_if_not_restarted": _counts_at(run.unrestarted, run.restart),
                "seconds": round(run.seconds, 1),
            }
            continue
        change = run.change
        detected: dict[str, Any] = {}
        for kind in KINDS:
            first = next((a for a in watched if a.kind == kind and a.at >= change), None)
            detected[kind] = None if first is None else {
                "after_s": round(first.at - change), "after_days": round((first.at - change)
                                                                         / DAY_S, 2),
                "partition": first.partition,
                "decisions": first.decisions_since_change,
                "labels": first.labels_since_change,
                "fraud_labels": first.fraud_labels_since_change,
                "value": round(first.value, 4), "reference": round(first.reference, 4),
            }
        report["changes"][f"{run.stream}_p{run.partitions}"] = {
            "change": _iso(change),
            "false_alarms_before": _counts(a for a in watched if a.at < change),
            "detected": detected, "cold_start_alarms": cold,
            "seconds": round(run.seconds, 1),
        }
    return report


def table(report: dict[str, Any]) -> str:
    """The drift part of the printed table."""
    lines = [f"{'drift alarms':<28} {'loss (labels)':>30} {'psi (scores)':>30}"]
    for name, s in report["stationary"].items():
        cells = [f"{s['alarms'][k]} false ({s['alarms_if_not_restarted'][k]} unrestarted)"
                 for k in KINDS]
        lines.append(f"{'stationary month ' + name:<28}" + "".join(f"{c:>31}" for c in cells))
    for name, c in report["changes"].items():
        cells = []
        for kind in KINDS:
            d = c["detected"][kind]
            cells.append("not detected" if d is None else
                         f"{d['after_days']:.1f} d, {d['labels']} labels ({d['fraud_labels']} fr)")
        lines.append(f"{name:<28}" + "".join(f"{cell:>31}" for cell in cells))
    return "\n".join(lines)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- running it -----------------------------------------------------------------------------
def _continue(results: Any, one: Pass, protocol: DriftProtocol, stream: str,
              records: Ordered | None) -> None:
    """In a forked child: the scorer as it was at the change, on `stream` from the change on."""
    if records is None:
        records = ordered(protocol, stream, one.partitions)
    one.feed(records[split(records, one.change):])
    results.put(one.result(stream))


def _whole(results: Any, protocol: DriftProtocol, stream: str, partitions: int) -> None:
    results.put(run_stream(protocol, stream, partitions))


def run_drift(protocol: DriftProtocol, workers: int = 2) -> dict[str, Any]:
    """The stationary month at 1 and 4 partitions, and each change at 1 partition.

    The streams are the same up to the change, so with `workers` > 1 the 1-partition scorer
    runs that far once and forked copies of it continue on each stream (the 4-partition pass
    runs beside it); with 1 worker every pass runs whole, one after the other.
    """
    started = time.perf_counter()
    # Drift lines are the scorer's business, not the benchmark's: they would bury the table.
    logging.getLogger("stream.core.pipeline").setLevel(logging.ERROR)
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        runs = [run_stream(protocol, stream, p)
                for stream, p in [("stationary", 1), ("stationary", 4),
                                  *((change, 1) for change in CHANGES)]]
    else:
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        children = [ctx.Process(target=_whole, args=(results, protocol, "stationary", 4))]
        children[0].start()
        one = Pass(protocol, 1)
        records = ordered(protocol, "stationary", 1)
        cut = split(records, one.change)
        one.feed(records[:cut])
        for stream in ("stationary", *CHANGES):
            child = ctx.Process(target=_continue, args=(
                results, one, protocol, stream, records if stream == "stationary" else None))
            child.start()
            children.append(child)
        runs = [results.get() for _ in children]
        for child in children:
            child.join()
        order = [("stationary", 1), ("stationary", 4), *((c, 1) for c in CHANGES)]
        runs.sort(key=lambda r: order.index((r.stream, r.partitions)))
    report = summarise(protocol, runs)
    settings = oversight_config(load_settings(environ={}))
    report["settings"] = {k: v for k, v in asdict(settings).items()
                          if k.startswith(("drift_", "psi_"))}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality.drift",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cards", type=int, default=DriftProtocol.cards)
    p.add_argument("--new-pattern-rate", type=float, default=DriftProtocol.new_pattern_rate,
                   help="share of the traffic the new pattern adds as fraud")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    protocol = DriftProtocol(seed=args.seed, cards=args.cards, merchants=args.cards // 2,
                             new_pattern_rate=args.new_pattern_rate)
    report = run_drift(protocol, args.workers)
    report["command"] = "python -m benchmarks.quality.drift " + " ".join(argv or sys.argv[1:])
    report["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps(report, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    print(text if args.out is None else "", end="")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
