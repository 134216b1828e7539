"""The benchmark's outputs: the JSON contract of issue 6, and a table for people.

The top-level keys are fixed (`events`, `eps`, `latency_ms`, `bytes_per_card`) because tools
and the README read them; everything else (ratios, timings, machine, targets) goes under
`extra`, which can grow without breaking a reader.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

EPS_KEYS = ("pipeline_at_least_once", "pipeline_exactly_once", "passthrough", "naive",
            "model_only", "scale_2_instances")
CPU_KEYS = ("pipeline_at_least_once", "pipeline_exactly_once")
# The targets of issues 6 and 14 (the table shows them beside the figures).
TARGET_TEXT = {
    "pipeline_at_least_once": ">= 0.9 x model_only and >= 1.5 x naive",
    "pipeline_exactly_once": ">= 0.85 x model_only",
    "scale_2_instances": ">= 1.4 x one instance (extra.scale_out)",
    "p99": "<= 25 ms at 2,000/s",
    "bytes_per_card": "<= 500",
}


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("kafka-python", "river", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "ram_gib": ram,
            "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions}


def targets(result: dict[str, Any], one_instance: float | None = None) -> dict[str, bool | None]:
    """Pass/fail per target (issue 14's; issue 6's exactly-once one still stands); None when
    a figure is missing (e.g. exactly-once not available, or the scale-out phase skipped)."""
    eps = result["eps"]
    alo, eos, core, naive = (eps.get("pipeline_at_least_once"), eps.get("pipeline_exactly_once"),
                             eps.get("model_only"), eps.get("naive"))
    two = eps.get("scale_2_instances")
    p99 = result["latency_ms"].get("p99")
    bpc = result.get("bytes_per_card")
    return {
        "pipeline_at_least_once": None if alo is None or not core or not naive
        else alo >= 0.9 * core and alo >= 1.5 * naive,
        "pipeline_exactly_once": None if eos is None or not core else eos >= 0.85 * core,
        "scale_2_instances": None if two is None or not one_instance
        else two >= 1.4 * one_instance,
        "p99": None if p99 is None else p99 <= 25.0,
        "bytes_per_card": None if bpc is None else bpc <= 500.0,
    }


def build(events: int, eps: dict[str, float | None], latency: dict[str, float | None],
          bytes_per_card: float | None, extra: dict[str, Any],
          bytes_per_merchant: float | None = None,
          cpu: dict[str, float | None] | None = None) -> dict[str, Any]:
    """The result document, with ratios vs passthrough, machine, date and targets in extra."""
    other = "kafka_python."
    result: dict[str, Any] = {
        "events": events,
        "eps": {k: _num(eps.get(k)) for k in EPS_KEYS},
        # The default adapter's figures are under "eps"; the other adapter's here.
        "kafka_python": {k[len(other):]: _num(v) for k, v in eps.items()
                         if k.startswith(other)},
        "latency_ms": {"offered_eps": _num(latency.get("offered_eps")),
                       "p50": _num(latency.get("p50")), "p99": _num(latency.get("p99"))},
        "bytes_per_card": _num(bytes_per_card),
        "bytes_per_merchant": _num(bytes_per_merchant),
        # The scorer process's CPU seconds per million events (default adapter).
        "cpu_seconds_per_million": {k: _num((cpu or {}).get(k)) for k in CPU_KEYS},
    }
    base = result["eps"]["passthrough"]
    ratios = {k: (round(v / base, 3) if v is not None and base else None)
              for k, v in result["eps"].items()}
    result["extra"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench", *sys.argv[1:]]),
        "ratio_vs_passthrough": ratios,
        "targets": targets(result, (extra.get("scale_out") or {}).get("scale_1_instance")),
        **extra,
    }
    return result


def _num(value: Any) -> float | None:
    """Round for reading; NaN (nothing measured) becomes null rather than invalid JSON."""
    if value is None or value != value:
        return None
    return round(float(value), 3)


def table(result: dict[str, Any]) -> str:
    """A fixed-width table: figure, value, ratio to passthrough, target and whether it holds."""
    extra = result["extra"]
    ratios, checks = extra["ratio_vs_passthrough"], extra["targets"]
    rows: list[tuple[str, str, str, str, str]] = []

    def mark(key: str) -> str:
        ok = checks.get(key)
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    for key in EPS_KEYS:
        value = result["eps"][key]
        shown = "null" if value is None else f"{value:,.0f} events/s"
        ratio = "" if ratios.get(key) is None else f"{ratios[key]:.2f}x"
        rows.append((key, shown, ratio, TARGET_TEXT.get(key, ""), mark(key) if key in
                     TARGET_TEXT else ""))
    lat = result["latency_ms"]
    offered = lat["offered_eps"] or 0
    for q in ("p50", "p99"):
        v = lat[q]
        rows.append((f"latency {q} @ {offered:,.0f}/s", "null" if v is None else f"{v:.1f} ms",
                     "", TARGET_TEXT.get(q, ""), mark(q) if q in TARGET_TEXT else ""))
    for key, value in result.get("kafka_python", {}).items():
        rows.append((f"kafka-python {key}", "null" if value is None else f"{value:,.0f} events/s",
                     "", "", ""))
    for key, value in result["cpu_seconds_per_million"].items():
        cores = "" if value is None else f"{value / 100:.2f} cores per 10,000 events/s"
        rows.append((f"cpu_seconds_per_million {key}", "null" if value is None
                     else f"{value:,.1f} s", "", cores, ""))
    bpc = result["bytes_per_card"]
    rows.append(("bytes_per_card", "null" if bpc is None else f"{bpc:,.0f} B", "",
                 TARGET_TEXT["bytes_per_card"], mark("bytes_per_card")))
    bpm = result.get("bytes_per_merchant")
    rows.append(("bytes_per_merchant", "null" if bpm is None else f"{bpm:,.0f} B", "", "", ""))
    header = ("figure", "value", "vs passthrough", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    m = extra["machine"]
    lines.append(f"events={result['events']:,}  {extra['date']}  {m['nproc']} cores  "
                 f"{m['cpu_model']}  {m['ram_gib']} GiB RAM")
    reason = extra.get("exactly_once_reason")
    if result["eps"]["pipeline_exactly_once"] is None and reason:
        lines.append(f"pipeline_exactly_once is null: {reason}")
    return "\n".join(lines)


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
