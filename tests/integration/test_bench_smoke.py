"""The benchmark runs end to end on a tiny input and writes JSON with every key.

No timing assertions on purpose: this machine is shared and slow runs are not bugs. The full
benchmark is `make bench`; this only proves that it works, so it cannot rot unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EPS_KEYS = {"pipeline_at_least_once", "pipeline_exactly_once", "passthrough", "naive",
            "model_only", "scale_2_instances"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def test_bench_smoke(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("BENCH_OUT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--events", "2000", "--cards", "10000",
         "--latency-seconds", "3", "--rate", "500", "--traffic-cards", "500",
         "--merchants", "5000", "--scale-tx-per-card-day", "30",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=500, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "pipeline_at_least_once" in proc.stdout  # the table was printed

    result = json.loads(out.read_text())
    assert {"events", "eps", "latency_ms", "bytes_per_card"} <= set(result)
    assert result["events"] == 2000
    assert set(result["eps"]) == EPS_KEYS
    for key, value in result["eps"].items():
        if key == "pipeline_exactly_once" and value is None:
            assert result["extra"]["exactly_once_reason"]  # null only with a reason
            continue
        assert _is_number(value) and value > 0, (key, value)
    assert set(result["latency_ms"]) == {"offered_eps", "p50", "p99"}
    assert result["latency_ms"]["offered_eps"] == 500
    assert all(_is_number(v) for v in result["latency_ms"].values()), result["latency_ms"]
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    latency = result["extra"]["latency"]["at_least_once"]
    assert latency["measured"] == 1500, latency  # 3 s at 500/s, after the warm-up
    assert latency["warmup_s"] >= 0.75, latency  # at least min(5, 3 / 4) s, not measured
    assert _is_number(latency["scorer_cores"]) and latency["scorer_cores"] > 0, latency
    assert 0.0 < latency["machine_busy"] <= 1.0, latency
    # KAFKA_BOOTSTRAP_SERVERS: no broker of the benchmark's own whose CPU it could read.
    assert latency["broker_cores"] is None and latency["broker_jit_cores"] is None, latency
    assert _is_number(result["bytes_per_card"]) and result["bytes_per_card"] > 0
    assert _is_number(result["bytes_per_merchant"]) and result["bytes_per_merchant"] > 0
    cpu = result["cpu_seconds_per_million"]
    assert set(cpu) == {"pipeline_at_least_once", "pipeline_exactly_once"}
    assert _is_number(cpu["pipeline_at_least_once"]) and cpu["pipeline_at_least_once"] > 0
    assert set(result["kafka_python"]) == {"pipeline_at_least_once", "pipeline_exactly_once",
                                           "passthrough"}
    scale = result["extra"]["scale_out"]
    assert [run["instances"] for run in scale["runs"]] == [1, 2]
    assert scale["tx_per_card_day"] == 30  # the scale-out's traffic density, as asked
    # Whether the instances gave up waiting for each other (stale reads) is part of the figure.
    assert all(isinstance(run["merchant_waits_given_up"], int) and
               run["merchant_waits_given_up"] >= 0 for run in scale["runs"]), scale["runs"]
    assert _is_number(scale["scale_1_instance"]) and scale["scale_1_instance"] > 0
    for run in scale["runs"]:  # whether a core was left; the broker's CPU only of its own
        assert 0.0 < run["machine_busy"] <= 1.0, run
        assert run["broker_cpu_seconds_per_million"] is None, run  # KAFKA_BOOTSTRAP_SERVERS
    assert result["extra"]["machine"]["nproc"] >= 1
