"""`python -m benchmarks.quality` (`make quality`): the detection-quality benchmark.

One realistic stream (fraud scenarios that come and go, labels days to weeks late), one test
week at its end, and every system side by side on that week: the champion online model at 1,
4 and 16 partitions, every challenger, weekly batch baselines and a constant floor, plus one
Kafka-backed run at 4 partitions through `stream run`; then the drift alarms (`drift.py`: false
alarms on a stationary month, detection delays of injected changes, under "drift"). See
docs/quality.md for the protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.agreement import disagreement, kafka_agreement
from benchmarks.quality.batch import Protocol, run_batch
from benchmarks.quality.dataset import Dataset, build
from benchmarks.quality.drift import DriftProtocol, run_drift
from benchmarks.quality.drift import table as drift_table
from benchmarks.quality.metrics import figures
from benchmarks.quality.online import CHALLENGERS, OnlineRun, run_online
from stream.config import load_settings
from stream.devtools.synthetic import TrafficConfig, parse_scenarios

log = logging.getLogger("benchmarks.quality")
_DATA: Dataset | None = None  # shared with forked workers (copy-on-write), never pickled


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=float, default=42.0, help="event time of the stream")
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--merchants", type=int, default=5_000)
    p.add_argument("--tx-per-card-per-day", type=float, default=1.0)
    p.add_argument("--fraud-rate", type=float, default=0.008)
    p.add_argument("--scenario", default="realistic", help="see `stream produce --help`")
    p.add_argument("--train-days", type=float, default=21.0,
                   help="batch training window, before the delay period")
    p.add_argument("--delay-days", type=float, default=7.0,
                   help="days before the test week whose labels are mostly unknown")
    p.add_argument("--test-days", type=float, default=7.0)
    p.add_argument("--k", type=int, default=100, help="cards per day for card precision@k")
    p.add_argument("--partitions", default="1,4,16")
    p.add_argument("--challengers", default=",".join(CHALLENGERS),
                   help="comma-separated challenger names ('' for none)")
    p.add_argument("--partitioned", default="1,4,16",
                   help="partition counts also run with merchant state kept per partition "
                        "(partitioned_pN: each partition sees 1/P of a merchant's traffic, the "
                        "scorer before the shared merchant table); empty for none")
    p.add_argument("--no-kafka", action="store_true", help="skip the Kafka-backed check")
    p.add_argument("--no-drift", action="store_true",
                   help="skip the drift alarms (false alarms, detection delays: drift.py)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default $QUALITY_OUT, else quality-results.json)")
    return p.parse_args(argv)


def _online_task(task: tuple[int, tuple[str, ...], bool, bool]) -> OnlineRun:
    assert _DATA is not None
    partitions, challengers, keep_features, shared = task
    return run_online(_DATA, partitions, challengers, keep_features, shared)


def run_online_systems(data: Dataset, partitions: list[int], challengers: tuple[str, ...],
                       workers: int, partitioned: list[int] | None = None) -> list[OnlineRun]:
    """Every online pass, in parallel processes that share the dataset by fork.

    The scorer as shipped shares one merchant table over all partitions; ``partitioned``:
    partition counts also run with merchant state kept per partition, for comparison.
    """
    global _DATA
    _DATA = data
    tasks: list[tuple[int, tuple[str, ...], bool, bool]] = [
        (p, (), p == 1, True) for p in partitions]
    tasks += [(p, (), False, False) for p in partitioned or ()]
    # Shadows never change the champion: they get passes of their own, two groups so that
    # the slow trees (Hoeffding, HAT) run in parallel with each other.
    groups = [challengers[0::2], challengers[1::2]]
    tasks += [(1, group, False, True) for group in groups if group]
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [_online_task(t) for t in tasks]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_online_task, tasks, chunksize=1)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def evaluate(data: Dataset, runs: list[OnlineRun], protocol: Protocol, k: int, seed: int,
             kafka: Callable[[Dataset], tuple[np.ndarray, np.ndarray, dict[str, float]]] | None
             ) -> dict[str, Any]:
    """Figures of every system on the test week, as the JSON report."""
    review = load_settings(environ={}).review_threshold
    test_from, test_to = protocol.test_window(data)
    idx, holdout = data.holdout(test_from, test_to)
    systems: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {"seconds": {}, "warming_decisions": {}}

    def add(name: str, scores: np.ndarray, alerts: np.ndarray | None = None) -> None:
        # Systems that publish decisions (the online champion) alert by their decisions, the
        # cold-start fallback included; the others by their scores at the review threshold.
        systems[name] = figures(holdout, scores[idx], k, review,
                                None if alerts is None else alerts[idx]).as_dict()

    features = None
    for run in runs:
        if not run.challengers:
            name = f"{'online' if run.shared else 'partitioned'}_p{run.partitions}"
            add(name, run.scores, run.alerts)
            extra["seconds"][name] = round(run.seconds, 1)
            extra["warming_decisions"][name] = {"stream": int(run.warming.sum()),
                                                "test": int(run.warming[idx].sum())}
        for name, scores in run.challengers.items():
            add(f"challenger:{name}", scores)
        if run.features is not None:
            features = run.features
    assert features is not None, "the 1-partition run keeps the decision-time features"
    for kind in ("logreg", "trees"):
        started = time.perf_counter()
        scores, trained = run_batch(data, features, protocol, kind, seed)
        add(f"batch_{kind}", scores)
        extra["seconds"][f"batch_{kind}"] = round(time.perf_counter() - started, 1)
        extra[f"batch_{kind}_trained_on"] = trained
    label_time = np.array(data.label_time)
    lo, hi = protocol.train_window(test_from)
    known = (data.times >= lo) & (data.times < hi) & (label_time <= test_from)
    prior = float(data.fraud[known].mean())
    add("constant", np.full(len(data.transactions), prior))
    if kafka is not None:
        scores, alerts, timings = kafka(data)
        add("kafka_p4", scores, alerts)
        extra["kafka_p4"] = timings
        diff = abs(systems["kafka_p4"]["roc_auc"] - systems["online_p4"]["roc_auc"])
        equal = int(np.sum(scores == runs_scores(runs, 4)))
        extra["kafka_p4_vs_online_p4"] = kafka_agreement(
            diff, equal, len(scores), timings.get("unaligned_records", 0.0),
            timings.get("merchant_wait_timeouts", 0.0))
    delays = [t - data.times[i] for i, t in enumerate(data.label_time)
              if data.fraud[i] and math.isfinite(t)]
    return {
        "events": len(data.transactions),
        "label_delay_s": float(np.median(delays)) if delays else math.nan,
        "test": {"from": _iso(test_from), "to": _iso(test_to)},
        "k": k,
        "systems": systems,
        "stream": {"labels": data.n_labels, "fraud": int(data.fraud.sum()),
                   "test_transactions": len(idx), "test_fraud": int(holdout.fraud.sum()),
                   "fraud_label_delay_p10_p90_s": [float(np.percentile(delays, 10)),
                                                   float(np.percentile(delays, 90))]
                   if delays else []},
        **extra,
    }


def runs_scores(runs: list[OnlineRun], partitions: int) -> np.ndarray:
    return next(r.scores for r in runs
                if r.partitions == partitions and not r.challengers and r.shared)


def table(report: dict[str, Any]) -> str:
    lines = [f"{'system':<28} {'ROC AUC':>8} {'avg prec':>9} {'card P@' + str(report['k']):>9}"
             f" {'alert':>7}"]
    for name, f in report["systems"].items():
        lines.append(f"{name:<28} {f['roc_auc']:>8.4f} {f['average_precision']:>9.4f} "
                     f"{f['card_precision_at_k']:>9.4f} {f['alert_rate']:>7.2%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    # Drift lines are the scorer's business, not the benchmark's: hundreds would bury the table.
    logging.getLogger("stream.core.pipeline").setLevel(logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    config = TrafficConfig(None, days=args.days, fraud_rate=args.fraud_rate, seed=args.seed,
                           n_cards=args.cards, n_merchants=args.merchants,
                           mean_tx_per_card_per_day=args.tx_per_card_per_day,
                           scenarios=parse_scenarios(args.scenario))
    started = time.perf_counter()
    data = build(config)
    log.info("stream: %d transactions (%d fraud), %d labels in %.1fs", len(data.transactions),
             int(data.fraud.sum()), data.n_labels, time.perf_counter() - started)
    partitions = [int(p) for p in args.partitions.split(",") if p.strip()]
    if 4 not in partitions and not args.no_kafka:
        partitions.append(4)
    if 1 not in partitions:
        partitions.insert(0, 1)
    challengers = tuple(c for c in args.challengers.split(",") if c.strip())
    partitioned = [int(p) for p in args.partitioned.split(",") if p.strip()]
    runs = run_online_systems(data, partitions, challengers, args.workers, partitioned)
    kafka = None
    if not args.no_kafka:
        from benchmarks.bench.harness import bench_broker
        from benchmarks.quality.kafka_check import run_kafka_check

        def kafka(d: Dataset) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
            with bench_broker() as (bootstrap, _):
                return run_kafka_check(bootstrap, d)

    protocol = Protocol(args.train_days, args.delay_days, args.test_days)
    report = evaluate(data, runs, protocol, args.k, args.seed, kafka)
    if not args.no_drift:
        report["drift"] = run_drift(DriftProtocol(seed=args.seed), args.workers)
    report["seed"] = args.seed
    report["command"] = "python -m benchmarks.quality " + " ".join(argv or sys.argv[1:])
    report["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    out = args.out or Path(os.environ.get("QUALITY_OUT", "quality-results.json"))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if "drift" in report:
        print(drift_table(report["drift"]))
    print(f"wrote {out}")
    check = report.get("kafka_p4_vs_online_p4")
    if check is not None and not check["agrees"]:
        print(disagreement(check), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
