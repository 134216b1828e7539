"""Where the scorer's time goes: `stream run` under a profiler, and a per-stage core timing.

Why both: a sampling profile of the real command shows the whole picture, Kafka client
included (consume, produce, commit), but its categories are only as good as the rules that
read the stacks; the in-process stage timing measures the core's stages one by one (decode,
features, predict, contributions, learn, verdict encode) with a clock, as a cross-check.

`py-spy` samples from outside the process (little overhead, native speed); its collapsed
stacks of the main thread, idle time included, are binned into the categories of `RULES` by
the innermost frame that matches. `pyinstrument` runs inside the interpreter and renders a
call tree as text; use it when ptrace is not allowed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

from benchmarks.bench.harness import Prefilled, Topics
from benchmarks.bench.scorer import scorer_env, stream_command

RATE_HZ = 250
# (function name, path fragment, category): the innermost matching frame decides.
JOIN = "rebalance: join + restore (before the window)"
# The Kafka client is librdkafka: its work runs in C threads, and what the main thread spends
# in it shows as time in the Python frame that called it (py-spy records Python frames).
RULES: tuple[tuple[str, str, str], ...] = (
    ("on_assigned", "serving/rebalance.py", JOIN),
    ("drain_changes", "", "checkpoint: drain + encode state"),
    ("encode_changes", "", "checkpoint: drain + encode state"),
    ("decode_transaction", "codec.py", "decode"),
    ("extract", "extractor.py", "features"),
    ("score_one", "scoring/model.py", "model predict"),
    ("top_contributions", "scoring/model.py", "contributions"),
    ("learn_one", "scoring/model.py", "model learn"),
    ("update", "evaluation/", "evaluation"),
    ("learn_label", "extractor.py", "features (merchant labels)"),
    ("_after_scoring", "pipeline.py", "pipeline bookkeeping"),
    ("encode_verdict", "codec.py", "verdict encode"),
    ("to_verdict", "core/verdicts.py", "verdict build"),
    ("send_waiting", "kafka/delivery.py", "produce (client enqueue)"),
    ("commit", "kafka/delivery.py", "checkpoint: commit (acks, offsets or transaction)"),
    ("poll", "kafka/rdkafka_consumer.py", "consume (fetched batch + wait)"),
    ("poll", "kafka/kafkapython_consumer.py", "consume (fetched batch + wait)"),
    ("", "prometheus_client", "prometheus metrics"),
    ("_refresh_gauges", "serving/loop.py", "gauges refresh"),
    ("take", "serving/intake.py", "intake: decode + buffer"),
    ("release", "serving/intake.py", "intake: event-time merge"),
    ("commit", "serving/checkpoint.py", "checkpoint other"),
    ("transaction", "serving/handlers.py", "handler other (bookkeeping)"),
    ("run", "serving/loop.py", "loop other"),
)


def _matches(frame: str, func: str, path: str) -> bool:
    """py-spy frames read `Class.method (path/file.py:line)`; match on method and path."""
    name, _, where = frame.partition(" (")
    return (not func or name == func or name.endswith("." + func)) and path in where


def _frame_category(frame: str) -> str | None:
    for func, path, category in RULES:
        if _matches(frame, func, path):
            return category
    return None


def categorise(collapsed: str) -> tuple[Counter[str], int]:
    """Samples per category over the stacks that run inside the scorer loop."""
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if not any(_matches(f, "run", "serving/loop.py") for f in frames):
            continue
        total += int(n)
        for frame in reversed(frames):
            category = _frame_category(frame)
            if category is not None:
                counts[category] += int(n)
                break
    return counts, total


def profile_scorer(topics: Topics, prefilled: Prefilled, tool: str, out_dir: Path,
                   modes: dict[str, list[str]], events: int) -> dict[str, Any]:
    """Profile `stream run` once per mode (name -> extra `run` flags), plus the stage timing.

    Each profiled run drains the first `events` records of the pre-filled topic: a profile
    needs a few thousand samples, not the whole topic, and a profiler slows the scorer.
    """
    result: dict[str, Any] = {"tool": tool, "events": events}
    for name, run_args in modes.items():
        result[name] = profile_run(topics, events, tool, out_dir, name, run_args)
    result["stages_us"] = stage_breakdown(prefilled)
    return result


def profile_run(topics: Topics, n: int, tool: str, out_dir: Path, name: str,
                run_args: list[str]) -> dict[str, Any]:
    """Run `stream run --max-events N` on the pre-filled topic under `tool`; report the file
    and, for py-spy, microseconds per event by category (group join excluded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    output = topics.fresh("profile-verdicts")
    group = f"bench-profile-{uuid.uuid4().hex[:8]}"
    scorer = stream_command(
        topics.bootstrap, "run", "--max-events", str(n), "--group-id", group,
        "--input-topic", topics.input, "--output-topic", output,
        "--labels-topic", topics.labels, "--dlq-topic", topics.dlq, *run_args)
    result: dict[str, Any] = {"command": " ".join(["stream", *scorer[3:]])}
    if tool == "py-spy":
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        raw = out_dir / f"scorer-{name}.pyspy.txt"
        # --nonblocking: sample without pausing the scorer, so the profiler does not slow it
        # (stacks may be slightly torn; at a few thousand samples that does not matter).
        command = [spy, "record", "--idle", "--nonblocking", "--rate", str(RATE_HZ),
                   "--format", "raw", "-o", str(raw), "--", *scorer]
    else:
        raw = out_dir / f"scorer-{name}.pyinstrument.txt"
        command = [sys.executable, "-m", "pyinstrument", "-r", "text",
                   "-o", str(raw), "-m", "stream", *scorer[3:]]
    started = time.monotonic()
    code, stderr = _run_group(command, scorer_env(topics.fresh_changelog()), 300 + n / 100)
    result["wall_s"] = round(time.monotonic() - started, 2)
    if code != 0:
        raise RuntimeError(f"profiled scorer failed ({code}):\n{stderr[-2000:]}")
    result["file"] = str(raw)
    if tool == "py-spy":
        counts, total = categorise(raw.read_text())
        join = counts.pop(JOIN, 0)
        result["join_s"] = round(join / RATE_HZ, 2)
        result["us_per_event"] = {k: round(v / RATE_HZ / n * 1e6, 2)
                                  for k, v in counts.most_common()}
        result["loop_us_per_event"] = round((total - join) / RATE_HZ / n * 1e6, 2)
    return result


def _run_group(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run the profiler in its own process group, so that on a timeout the profiler AND the
    scorer it started are stopped (SIGTERM, then SIGKILL): no orphan scorer."""
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        raise RuntimeError(f"profiled scorer did not finish in {timeout_s:.0f}s") from None


def stage_breakdown(prefilled: Prefilled, limit: int = 50_000) -> dict[str, Any]:
    """Mean microseconds per event of each core stage, timed one by one in process.

    Re-does the pipeline's steps with its own functions, so it reads internals of
    stream/core/pipeline.py; if they change shape, the breakdown is skipped, not the benchmark.
    """
    try:
        return _stages(prefilled.values[:limit], prefilled.partitions[:limit])
    except Exception as exc:  # noqa: BLE001 - a diagnostic only
        return {"error": f"{type(exc).__name__}: {exc}"}


def _stages(values: list[bytes], partitions: list[int]) -> dict[str, float]:
    from stream.assembly import merchant_partitions, model_version, pipeline_config
    from stream.config import load_settings
    from stream.contracts.codec import decode_transaction, encode_verdict, format_time
    from stream.contracts.messages import Verdict
    from stream.core.pipeline import Pipeline
    from stream.core.scoring.model import learn_one, score_one, top_contributions

    settings = load_settings()
    # The merchant state as `stream run` keeps it (the events come in order).
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=merchant_partitions(settings, max(partitions) + 1))
    clock = time.perf_counter
    acc: defaultdict[str, float] = defaultdict(float)
    for value, partition in zip(values, partitions, strict=True):
        t0 = clock()
        tx = decode_transaction(value)
        t1 = clock()
        state = pipeline.assign(partition)
        features = state.features.extract(tx)
        t2 = clock()
        score = score_one(state.model, features)
        decision, model_state = pipeline.config.warmup.decide(
            pipeline.config.policy, score, tx.amount, state.learned)
        t3 = clock()
        contributions = top_contributions(state.model, features, pipeline.config.explain_top_k)
        t4 = clock()
        if tx.is_fraud is not None:
            learn_one(state.model, features, tx.is_fraud)
            state.features.learn_label(tx.merchant_id, tx.is_fraud, tx.timestamp)
            state.learned += 1  # as the pipeline counts it: the warm-up ends as it would live
        t5 = clock()
        pipeline.evaluation.update(bool(tx.is_fraud), score)
        t6 = clock()
        now = time.time()
        verdict = Verdict(tx.transaction_id, tx.card_id, score, decision,
                          pipeline.model_version, format_time(now), 1.0, contributions,
                          model_state=model_state)
        t7 = clock()
        encode_verdict(verdict)
        t8 = clock()
        acc["decode"] += t1 - t0
        acc["features"] += t2 - t1
        acc["model predict + policy"] += t3 - t2
        acc["contributions"] += t4 - t3
        acc["model learn + merchant label"] += t5 - t4
        acc["evaluation"] += t6 - t5
        acc["verdict build (format_time)"] += t7 - t6
        acc["verdict encode"] += t8 - t7
    n = len(values)
    out = {k: round(v / n * 1e6, 2) for k, v in acc.items()}
    out["total"] = round(sum(acc.values()) / n * 1e6, 2)
    return out
