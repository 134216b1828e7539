"""The benchmark's command line and the order of its phases.

One broker, one pre-filled input topic, an untimed scorer run to warm the broker, then every
contender back to back, each with a fresh consumer group and its own output topic: the scorer
at-least-once, the scorer exactly-once (when that mode exists), passthrough, both again on
kafka-python, naive, model_only; then latency on a fresh empty topic, then the scale-out (one
and two scorers over 8 partitions, scale.py), then bytes per card and per merchant in fresh
processes. With `--repeat K` the five throughput contenders run K rounds
(interleaved, so slow drift of a shared machine hits them all alike) and the median is reported.
Everything started here (broker, scorers) is stopped in `finally` blocks, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.bench import baselines, memory, report
from benchmarks.bench.harness import (
    Prefilled,
    Topics,
    bench_broker,
    local_broker_pid,
    prefill,
    quiet_broker,
)
from benchmarks.bench.latency import LatencyResult, measure_latency
from benchmarks.bench.scale import scale_out
from benchmarks.bench.scorer import has_run_flag, run_help, run_pipeline, scorer_env, stream_command

log = logging.getLogger("benchmarks.bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench",
                                description="End-to-end benchmark of the fraud scorer.")
    p.add_argument("--events", type=int, default=200_000,
                   help="events pre-filled and drained by each throughput contender")
    p.add_argument("--rate", type=float, default=2000.0, help="offered events/s for latency")
    p.add_argument("--latency-seconds", type=float, default=20.0,
                   help="seconds of the latency phase measured, after its warm-up")
    p.add_argument("--warmup-seconds", type=float, default=None,
                   help="the latency phase's shortest warm-up, not measured (default min(5, "
                        "seconds/4)); longer while a local broker's JIT compiles")
    p.add_argument("--warmup-max-seconds", type=float, default=30.0,
                   help="the latency phase's longest warm-up")
    p.add_argument("--cards", type=int, default=1_000_000,
                   help="distinct cards for bytes_per_card")
    p.add_argument("--merchants", type=int, default=200_000,
                   help="distinct merchants for bytes_per_merchant")
    p.add_argument("--warmup-events", type=int, default=50_000,
                   help="events of an untimed scorer run first, to warm the broker's JIT "
                        "(at most --events; 0: none)")
    p.add_argument("--scale-events", type=int, default=None,
                   help="events of the scale-out phase (default --events; 0: skip it)")
    p.add_argument("--scale-tx-per-card-day", type=float, default=3.0,
                   help="transactions per card and day in the scale-out phase's traffic: how "
                        "dense it is in event time, which bounds two instances catching up "
                        "together (docs/benchmark.md)")
    p.add_argument("--traffic-cards", type=int, default=10_000,
                   help="distinct cards in the synthetic traffic of the Kafka phases")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of the throughput contenders; the median is reported")
    p.add_argument("--profile", choices=("pyinstrument", "py-spy"), default=None,
                   help="also run `stream run` under a profiler on the pre-filled topic")
    p.add_argument("--profile-dir", type=Path, default=Path("bench-profile"))
    p.add_argument("--profile-events", type=int, default=50_000,
                   help="events drained by each profiled run (at most --events)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default $BENCH_OUT, else bench-results.json)")
    args = p.parse_args(argv)
    if args.events < 1 or args.cards < 1 or args.merchants < 1 or args.rate <= 0 \
            or args.latency_seconds <= 0 or (args.warmup_seconds or 0.0) < 0 \
            or args.warmup_max_seconds < 0:
        p.error("--events, --cards, --merchants, --rate and --latency-seconds must be positive, "
                "and the warm-up seconds not negative")
    args.warmup_events = max(0, min(args.warmup_events, args.events))
    if args.scale_events is None:
        args.scale_events = args.events
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    args.profile_events = max(1, min(args.profile_events, args.events))
    return args


def _timeout(events: int, floor_eps: float = 300.0) -> float:
    """Generous limit for one drain: a hung contender fails the run instead of hanging it."""
    return 120.0 + events / floor_eps


def _group(kind: str, topics: Topics) -> str:
    return f"bench-{kind}-{topics.run_id}-{uuid.uuid4().hex[:6]}"


def _scorer_run(topics: Topics, events: int, extra_args: list[str], slow: bool = False) -> Any:
    output = topics.fresh("verdicts")
    command = stream_command(
        topics.bootstrap, "run", "--max-events", str(events),
        "--group-id", _group("scorer", topics), "--input-topic", topics.input,
        "--output-topic", output, "--labels-topic", topics.labels, "--dlq-topic", topics.dlq,
        *extra_args,
    )
    timeout = _timeout(events, 100.0 if slow else 300.0)
    return run_pipeline(command, events, scorer_env(topics.fresh_changelog()), timeout,
                        local_broker_pid())


ALO = ["--guarantee", "at-least-once"]
EOS = ["--guarantee", "exactly-once"]
KAFKA_PYTHON = ["--kafka-client", "kafka-python"]


def exactly_once_support() -> str | None:
    """None when `stream run` can be asked for exactly-once, else the reason it cannot.

    Without a --guarantee flag the scorer is at-least-once only, and that is what runs as
    `pipeline_at_least_once` (the flag is then left out of its command line).
    """
    from stream.config import load_settings
    from stream.errors import ConfigError

    if not has_run_flag("--guarantee", run_help()):
        return "`stream run` has no --guarantee flag yet"
    try:
        load_settings(environ={}, guarantee="exactly-once")
    except ConfigError as exc:
        return f"settings refuse guarantee=exactly-once: {exc}"
    return None


def guarantee_flag_exists(eos_reason: str | None) -> bool:
    return eos_reason is None or "--guarantee" not in eos_reason


def throughput_round(topics: Topics, prefilled: Prefilled, eos_reason: str | None,
                     alo_args: list[str], details: dict[str, list[Any]],
                     ) -> tuple[dict[str, float | None], str | None]:
    """One round of the five contenders; returns events/s by name and the exactly-once reason."""
    n = prefilled.count
    eps: dict[str, float | None] = {}
    log.info("pipeline_at_least_once: stream run --max-events %d %s", n, " ".join(alo_args))
    alo = _scorer_run(topics, n, alo_args)
    eps["pipeline_at_least_once"] = alo.eps
    details["pipeline_at_least_once"].append(alo.__dict__)
    eps["pipeline_exactly_once"] = None
    if eos_reason is None:
        log.info("pipeline_exactly_once: stream run --guarantee exactly-once")
        try:
            eos = _scorer_run(topics, n, EOS)
            eps["pipeline_exactly_once"] = eos.eps
            details["pipeline_exactly_once"].append(eos.__dict__)
        except RuntimeError as exc:
            eos_reason = f"exactly-once run failed: {str(exc)[-600:]}"
            log.warning("%s", eos_reason)
    log.info("passthrough")
    eps["passthrough"] = baselines.passthrough(topics, n, _group("passthrough", topics),
                                               _timeout(n))
    # The same three on the other adapter (`kafka_client = kafka-python`).
    log.info("kafka-python: pipeline at-least-once, exactly-once, passthrough")
    kp_alo = _scorer_run(topics, n, [*alo_args, *KAFKA_PYTHON], slow=True)
    eps["kafka_python.pipeline_at_least_once"] = kp_alo.eps
    details.setdefault("kafka_python.pipeline_at_least_once", []).append(kp_alo.__dict__)
    eps["kafka_python.pipeline_exactly_once"] = None
    if eos_reason is None:
        try:
            kp_eos = _scorer_run(topics, n, [*EOS, *KAFKA_PYTHON], slow=True)
            eps["kafka_python.pipeline_exactly_once"] = kp_eos.eps
            details.setdefault("kafka_python.pipeline_exactly_once", []).append(
                kp_eos.__dict__)
        except RuntimeError as exc:
            log.warning("kafka-python exactly-once run failed: %s", str(exc)[-600:])
    eps["kafka_python.passthrough"] = baselines.passthrough(
        topics, n, _group("passthrough-kp", topics), _timeout(n, 100.0), "kafka-python")
    log.info("naive")
    eps["naive"] = baselines.naive(topics, n, _group("naive", topics), _timeout(n, 100.0))
    log.info("model_only")
    eps["model_only"] = baselines.model_only(prefilled, topics)
    log.info("round: %s", {k: None if v is None else round(v) for k, v in eps.items()})
    return eps, eos_reason


def _log_latency(mode: str, lat: LatencyResult) -> None:
    """The latency phase's figures and where the cores went while it was measured."""
    log.info("latency, %s: p50 %.0f ms, p99 %.0f ms after a %.1fs warm-up; cores used: "
             "scorer %s, broker %s (its JIT compiler %s), machine busy %s", mode, lat.p50,
             lat.p99, lat.warmup_s, lat.scorer_cores, lat.broker_cores, lat.broker_jit_cores,
             lat.machine_busy)


def _median(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return statistics.median(numbers) if numbers else None


def _profile(args: argparse.Namespace, topics: Topics, prefilled: Prefilled,
             alo_args: list[str], eos_reason: str | None) -> dict[str, Any]:
    """Profile the scorer after the measurements; a failure here costs the profile only."""
    from benchmarks.bench.profile import profile_scorer

    modes = {"at_least_once": alo_args}
    if eos_reason is None:
        modes["exactly_once"] = EOS
    log.info("profile: stream run under %s, %d events", args.profile, args.profile_events)
    try:
        return profile_scorer(topics, prefilled, args.profile, args.profile_dir, modes,
                              args.profile_events)
    except Exception as exc:  # noqa: BLE001 - never lose the measured figures to a profiler
        log.warning("profiling failed: %s", exc)
        return {"error": str(exc)[-1000:]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All phases against one broker; returns the result document."""
    started = time.monotonic()
    phases: dict[str, float] = {}
    eos_reason = exactly_once_support()
    alo_args = ALO if guarantee_flag_exists(eos_reason) else []
    with bench_broker() as (bootstrap, where):
        topics = Topics(bootstrap)
        try:
            topics.create_base()
            t = time.monotonic()
            prefilled = prefill(topics, args.events, args.traffic_cards, args.seed)
            phases["prefill_s"] = time.monotonic() - t
            log.info("pre-filled %d events (%d fraud) in %.1fs", prefilled.count,
                     prefilled.fraud, prefilled.seconds)
            rounds: list[dict[str, float | None]] = []
            details: dict[str, list[Any]] = {"pipeline_at_least_once": [],
                                             "pipeline_exactly_once": []}
            if args.warmup_events:
                # A fresh broker JIT-compiles its hot paths during the first minute of load
                # (its C2 compiler threads took ~3.7 of 8 CPU seconds then): untimed, that
                # cost would fall on whichever contender ran first.
                t = time.monotonic()
                log.info("warm-up: stream run --max-events %d, untimed", args.warmup_events)
                _scorer_run(topics, args.warmup_events, alo_args)
                phases["warmup_s"] = time.monotonic() - t
            t = time.monotonic()
            for _ in range(args.repeat):
                eps, eos_reason = throughput_round(topics, prefilled, eos_reason, alo_args,
                                                   details)
                rounds.append(eps)
            phases["throughput_s"] = time.monotonic() - t
            waited = quiet_broker()
            if waited is not None:
                phases["broker_quiet_wait_s"] = waited
                log.info("the broker went quiet after %.1fs", waited)
            log.info("latency: %.0f events/s, %.0fs measured after the warm-up", args.rate,
                     args.latency_seconds)
            t = time.monotonic()
            lat, _ = measure_latency(
                topics, args.rate, args.latency_seconds, args.traffic_cards, args.seed,
                args.warmup_seconds, tuple(alo_args), warmup_max_s=args.warmup_max_seconds)
            _log_latency("at-least-once", lat)
            latency_extra: dict[str, Any] = {"at_least_once": lat.extra()}
            if eos_reason is None:
                quiet_broker()
                log.info("latency, exactly-once: %.0f events/s for %.0fs", args.rate,
                         args.latency_seconds)
                try:
                    eos_appended, eos_visible = measure_latency(
                        topics, args.rate, args.latency_seconds, args.traffic_cards,
                        args.seed, args.warmup_seconds, tuple(EOS), live=True,
                        warmup_max_s=args.warmup_max_seconds)
                    assert eos_visible is not None
                    _log_latency("exactly-once, visible", eos_visible)
                    latency_extra["exactly_once_visible"] = eos_visible.extra()
                    latency_extra["exactly_once_appended"] = eos_appended.extra()
                except RuntimeError as exc:
                    latency_extra["exactly_once_error"] = str(exc)[-600:]
            phases["latency_s"] = time.monotonic() - t
            # After the latency phase: its many fresh topics and four scorers leave the
            # broker busier for a while (compaction, flushes), which showed in the latency.
            scaled: dict[str, Any] | None = None
            if args.scale_events:
                t = time.monotonic()
                scaled = scale_out(topics, args.scale_events, args.traffic_cards, args.seed,
                                   _timeout(args.scale_events), args.scale_tx_per_card_day)
                phases["scale_s"] = time.monotonic() - t
            profiled = None
            if args.profile:
                t = time.monotonic()
                profiled = _profile(args, topics, prefilled, alo_args, eos_reason)
                phases["profile_s"] = time.monotonic() - t
        finally:
            topics.delete_all()
    log.info("bytes_per_card: %d cards in a fresh process", args.cards)
    t = time.monotonic()
    mem = memory.measure(args.cards)
    log.info("bytes_per_merchant: %d merchants in a fresh process", args.merchants)
    mem.update(memory.measure(args.merchants, what="--merchants"))
    phases["memory_s"] = time.monotonic() - t
    phases["total_s"] = time.monotonic() - started
    keys = list(rounds[0])
    eps_median = {k: _median([r[k] for r in rounds]) for k in keys}
    if scaled is not None:
        eps_median["scale_2_instances"] = scaled["scale_2_instances"]
    cpu = {k: _median([run["cpu_seconds_per_million"] for run in runs])
           for k, runs in details.items()}
    broker_cpu = {k: _median([run["broker_cpu_seconds_per_million"] for run in runs])
                  for k, runs in details.items()}
    extra: dict[str, Any] = {
        "broker": where,
        "exactly_once_reason": eos_reason,
        "rounds": rounds,
        "pipeline_runs": details,
        "prefill": {"events": prefilled.count, "fraud": prefilled.fraud,
                    "traffic_cards": args.traffic_cards, "seconds": round(prefilled.seconds, 2)},
        "latency": latency_extra,
        "memory": mem,
        "cpu_seconds_per_million": cpu,
        "broker_cpu_seconds_per_million": broker_cpu,
        "scale_out": scaled,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "method": "see docs/benchmark.md",
    }
    if profiled is not None:
        extra["profile"] = profiled
    return report.build(
        args.events, eps_median, {"offered_eps": lat.offered_eps, "p50": lat.p50, "p99": lat.p99},
        mem["bytes_per_card"], extra, mem["bytes_per_merchant"], cpu,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    out = args.out or Path(os.environ.get("BENCH_OUT") or "bench-results.json")
    result = run(args)
    report.write(result, out)
    print(report.table(result))
    print(f"JSON written to {out}")
    return 0
