"""The comparison as text (terminal) and as one self-contained HTML file (plots inline SVG).

The HTML has no scripts, no external stylesheets, fonts or images: it can be attached to a
ticket or an e-mail and opened years later, offline, exactly as it was.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from stream.batch import svg
from stream.batch.compare import HIST_BINS, BatchMetrics, Comparison, Side
from stream.core.evaluation.prequential import Summary

COLORS = ("#1f6feb", "#d1242f")
FRAUD, LEGIT = "#d1242f", "#1f6feb"


def _f(value: float, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"


def prequential_lines(snap: Summary, title: str = "prequential") -> list[str]:
    """The rolling metrics of a run (`stream train`, `stream replay`), for the terminal."""
    review, decline = snap.rates("review"), snap.rates("decline")
    lines = [
        f"{title} (last {snap.window_labels:,} of {snap.labels:,} labels, "
        f"{snap.positives:,} fraud): ROC AUC {_f(snap.roc_auc)}  PR AUC {_f(snap.pr_auc)}  "
        f"log loss {_f(snap.log_loss)}",
    ]
    for name, rates in (("review", review), ("decline", decline)):
        lines.append(f"  {name:<7} >= {_f(rates.threshold, 2)}: precision {_f(rates.precision)}"
                     f"  recall {_f(rates.recall)}  F1 {_f(rates.f1)}")
    lines.append(f"  alert rate {_pct(snap.alert_rate)}  label rate {_pct(snap.label_rate)}  "
                 f"label delay mean {_duration(snap.label_delay_mean_s)} "
                 f"p50 {_duration(snap.label_delay_p50_s)} "
                 f"p90 {_duration(snap.label_delay_p90_s)}")
    return lines


def _metric_rows(a: BatchMetrics, b: BatchMetrics) -> list[tuple[str, str, str]]:
    rows = [("labelled decisions", f"{a.labelled:,}", f"{b.labelled:,}"),
            ("fraud among them", f"{a.positives:,}", f"{b.positives:,}"),
            ("ROC AUC", _f(a.roc_auc), _f(b.roc_auc)),
            ("PR AUC (average precision)", _f(a.pr_auc), _f(b.pr_auc)),
            ("log loss", _f(a.log_loss), _f(b.log_loss)),
            ("alert rate (>= review)", _pct(a.alert_rate), _pct(b.alert_rate))]
    for name in ("review", "decline"):
        ra, rb = a.at[name], b.at[name]
        rows += [(f"precision @ {name} {ra.threshold:g}", _f(ra.precision), _f(rb.precision)),
                 (f"recall @ {name} {ra.threshold:g}", _f(ra.recall), _f(rb.recall)),
                 (f"F1 @ {name} {ra.threshold:g}", _f(ra.f1), _f(rb.f1))]
    return rows


def text_report(c: Comparison) -> str:
    """What `stream compare` prints."""
    verdict = "IDENTICAL" if c.identical else "DIFFERENT"
    lines = [
        f"A: {c.a.name} ({c.a.model})",
        f"B: {c.b.name} ({c.b.model})",
        f"{c.events:,} transactions scored by both: {verdict}",
        f"  decision agreement {_pct(c.agreement)}  |score diff| max {_f(c.max_abs_diff, 6)} "
        f"mean {_f(c.mean_abs_diff, 6)}",
    ]
    width = max(len(r[0]) for r in _metric_rows(c.a.metrics, c.b.metrics))
    lines.append(f"  {'':<{width}}  {'A':>10}  {'B':>10}")
    for name, va, vb in _metric_rows(c.a.metrics, c.b.metrics):
        lines.append(f"  {name:<{width}}  {va:>10}  {vb:>10}")
    disagreements = {k: n for k, n in c.decisions.items() if k[0] != k[1]}
    if disagreements:
        lines.append("  decisions that differ (A -> B): " + ", ".join(
            f"{da}->{db} {n:,}" for (da, db), n in disagreements.items()))
    lines += [f"  note: {note}" for note in c.notes]
    return "\n".join(lines)


def _charts(c: Comparison) -> list[str]:
    sides: tuple[Side, Side] = (c.a, c.b)
    roc = [svg.Series(f"{s.name} AUC {_f(s.roc.area, 3)}", s.roc.x, s.roc.y, col, i == 1)
           for i, (s, col) in enumerate(zip(sides, COLORS, strict=True))]
    pr = [svg.Series(f"{s.name} AP {_f(s.pr.area, 3)}", s.pr.x, s.pr.y, col, i == 1)
          for i, (s, col) in enumerate(zip(sides, COLORS, strict=True))]
    rolling = [svg.Series(s.name, [p[0] for p in s.rolling_auc],
                          [p[1] for p in s.rolling_auc], col, i == 1)
               for i, (s, col) in enumerate(zip(sides, COLORS, strict=True))]
    edges = [i / HIST_BINS for i in range(HIST_BINS)]
    charts = [
        svg.line_chart("ROC curve", roc, "false positive rate", "true positive rate",
                       (0.0, 1.0), (0.0, 1.0), diagonal=True),
        svg.line_chart("Precision-recall curve", pr, "recall", "precision", (0.0, 1.0),
                       (0.0, 1.0)),
    ]
    for side in sides:
        charts.append(svg.histogram(
            f"Score distribution, {side.name}",
            [svg.Series("fraud", edges, side.hist_fraud, FRAUD),
             svg.Series("legitimate", edges, side.hist_legit, LEGIT, True)],
            "score", "share of class"))
    y_low = min((p[1] for s in sides for p in s.rolling_auc), default=0.5)
    charts.append(svg.line_chart("Rolling ROC AUC over event time", rolling, "event time (UTC)",
                                 "ROC AUC", y_range=(max(0.0, min(0.5, y_low) - 0.02), 1.0),
                                 x_is_time=True))
    return charts


def html_report(c: Comparison, title: str = "fraud-stream model comparison") -> str:
    """One self-contained HTML page: summary, metrics side by side, five charts."""
    verdict = ("identical scores" if c.identical else "scores differ")
    rows = "".join(f"<tr><th>{escape(n)}</th><td>{escape(a)}</td><td>{escape(b)}</td></tr>"
                   for n, a, b in _metric_rows(c.a.metrics, c.b.metrics))
    kinds = ("approve", "review", "decline")
    decisions = "<tr><th>A \\ B</th>" + "".join(f"<th>{k}</th>" for k in kinds) + "</tr>" + \
        "".join(f"<tr><th>{da}</th>" + "".join(
            f"<td>{c.decisions.get((da, db), 0):,}</td>" for db in kinds) + "</tr>"
            for da in kinds)
    notes = "".join(f"<li>{escape(n)}</li>" for n in c.notes)
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 24px; max-width: 1200px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 22px 0 8px; }}
table {{ border-collapse: collapse; margin: 6px 0; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 10px; text-align: right; }}
th {{ text-align: left; font-weight: 500; background: #f6f8fa; }}
.badge {{ display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
  background: {"#1a7f37" if c.identical else "#bf8700"}; }}
.muted {{ color: #656d76; }} .charts {{ display: flex; flex-wrap: wrap; }}
.row {{ display: flex; flex-wrap: wrap; gap: 48px; }}
{svg.STYLE}
</style></head><body>
<h1>{escape(title)}</h1>
<p class="muted">generated {generated}</p>
<p><b>A</b>: {escape(c.a.name)} <span class="muted">({escape(c.a.model)})</span><br>
<b>B</b>: {escape(c.b.name)} <span class="muted">({escape(c.b.model)})</span></p>
<div class="row"><div>
<h2>Equivalence <span class="badge">{verdict}</span></h2>
<table>
<tr><th>transactions scored by both</th><td>{c.events:,}</td></tr>
<tr><th>decision agreement</th><td>{_pct(c.agreement)}</td></tr>
<tr><th>max |score A - score B|</th><td>{_f(c.max_abs_diff, 6)}</td></tr>
<tr><th>mean |score A - score B|</th><td>{_f(c.mean_abs_diff, 6)}</td></tr>
</table>
<h2>Decisions (rows A, columns B)</h2><table>{decisions}</table>
{f"<ul>{notes}</ul>" if notes else ""}
</div><div>
<h2>Prequential metrics (decision-time scores, every labelled decision)</h2>
<table><tr><th></th><th>A</th><th>B</th></tr>{rows}</table>
</div></div>
<h2>Charts</h2>
<div class="charts">{"".join(_charts(c))}</div>
</body></html>
"""
