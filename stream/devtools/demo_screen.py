"""What `stream demo` shows: one summary that stays put at the bottom, log lines scrolling above.

Log lines go through the live console (`logs_above`) rather than to a file. rich's `Live` owns
the terminal while the summary is up: whatever it prints itself is written above the summary,
which is then redrawn beneath it. A plain `StreamHandler` writes to the terminal behind its
back (it holds the original stderr, so `Live(redirect_stderr=True)` cannot catch it), and the
next redraw then overwrites the log line and leaves a stale copy of the summary's top above it:
the repeated, headless summaries seen in a 150x45 terminal. The log lines themselves (a drift
detected, partitions assigned, a broker retry) are part of what the demo shows, so they stay on
screen, where a file would need a second terminal to be seen at all.

Only the demo's own thread writes to the terminal. A record logged on another thread (the
scorer's restores and assignments, the clients' threads) is queued and printed by the demo's
loop (`LogRelay.drain`), and the summary is redrawn by the same loop, never by rich's refresh
thread. rich's `Live` moves the cursor up by the height of the summary it last drew before
printing anything above it; two threads printing at once (the scorer's first log lines while
the summary was being drawn for the first time) left the summary's title and top border
behind once in a clean-clone CI run, above the log lines.

Every number says what it counts. The scorer's counters come from the Prometheus registry and
count what this process did; the group's committed offsets decide where it starts, so records
an earlier run produced but never got scored are scored (and counted) now: the summary says how
many there were when this run started.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from rich.console import Console, RenderableType
from rich.constrain import Constrain
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

TITLE = "fraud-stream demo"
MAX_WIDTH = 100  # the summary fits a 100x30 terminal; longer values are cut with an ellipsis
MAX_ROWS = 30


@dataclass(frozen=True)
class RunView:
    """What the demo itself knows, as opposed to what the scorer's registry holds."""

    produced: int  # transactions this run handed to its producer
    planned: int  # --count
    earlier: int | None  # input records not yet processed when this run started (None: unknown)
    per_second: float  # scored per second since the previous refresh
    elapsed_s: float
    model: str
    window: int  # labels in the rolling evaluation window (setting metrics_window)
    metrics_url: str | None = None  # where /metrics is served
    done: bool = False


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist yet."""
    found = registry.get_sample_value(name, labels or None)
    return 0.0 if found is None else found


def gauge_sum(registry: CollectorRegistry, name: str) -> float:
    """Sum of a gauge over all its label values (lag over partitions)."""
    return sum(sample.value for metric in registry.collect() for sample in metric.samples
               if sample.name == name)


def scored_label(earlier: int | None) -> str:
    """The scored count's label: what it includes besides this run's own records."""
    if earlier is None:
        return "scored (this run, may include records left from earlier runs)"
    if earlier == 0:
        return "scored (this run)"
    return f"scored (this run, includes {earlier:,} left from earlier runs)"


def _optional(found: float | None, fmt: str) -> str:
    return "-" if found is None else format(found, fmt)


def summary(registry: CollectorRegistry, view: RunView) -> RenderableType:
    """One screen an operator can read at a glance, at most MAX_WIDTH x MAX_ROWS."""
    model = view.model
    scored = value(registry, "fraudstream_events_total", outcome="scored")
    dead = value(registry, "fraudstream_events_total", outcome="dead_lettered")
    mix = {d: value(registry, "fraudstream_verdicts_total", decision=d)
           for d in ("approve", "review", "decline")}
    total = sum(mix.values()) or 1.0
    auc = registry.get_sample_value("fraudstream_model_roc_auc", {"model": model})
    pr_auc = registry.get_sample_value("fraudstream_model_pr_auc", {"model": model})
    alert_rate = registry.get_sample_value("fraudstream_alert_rate", {"model": model})
    label_rate = registry.get_sample_value("fraudstream_label_rate")
    state = "finished" if view.done else "running"
    table = Table(
        title=Text(f"{TITLE} - {state}, {view.elapsed_s:,.0f}s", no_wrap=True,
                   overflow="ellipsis"),
        caption=Text("log lines scroll above this summary", no_wrap=True, overflow="ellipsis"),
        show_header=False, min_width=60,
    )
    table.add_column("what", style="bold", no_wrap=True, overflow="ellipsis", max_width=62)
    table.add_column("value", justify="right", no_wrap=True, overflow="ellipsis", max_width=30)
    rows = [
        ("produced (this run)", f"{view.produced:,} of {view.planned:,}"),
        (scored_label(view.earlier), f"{int(scored):,}"),
        ("dead letters (this run)", f"{int(dead):,}"),
        ("scored per second (last refresh)", "-" if view.done else f"{view.per_second:,.0f}"),
        ("approve / review / decline (this run)",
         " / ".join(f"{100 * mix[d] / total:.1f}%" for d in mix)),
        (f"rolling ROC AUC (latest <= {view.window:,} labels)", _optional(auc, ".3f")),
        ("rolling PR AUC (same labels)", _optional(pr_auc, ".3f")),
        ("alert rate (recent decisions)",
         "-" if alert_rate is None else f"{100 * alert_rate:.2f}%"),
        ("label rate (decisions labelled)",
         "-" if label_rate is None else f"{100 * label_rate:.1f}%"),
        ("labels learned (this run)",
         f"{int(value(registry, 'fraudstream_model_updates_total')):,}"),
        ("consumer lag (now, records)",
         f"{int(gauge_sum(registry, 'fraudstream_consumer_lag')):,}"),
        ("model", model),
        ("metrics", view.metrics_url or "off"),
    ]
    for what, shown in rows:
        table.add_row(what, shown)
    return Constrain(table, MAX_WIDTH)


class LogRelay(logging.Handler):
    """Keeps records for the thread that owns the screen, which prints them (`drain`).

    >>> import io
    >>> console = Console(width=100, file=io.StringIO(), color_system=None)
    >>> relay = LogRelay(console)
    >>> relay.handle(logging.makeLogRecord({"name": "stream", "msg": "assigned", "levelno": 20,
    ...                                      "levelname": "INFO"}))
    True
    >>> console.file.getvalue(), relay.drain(), "stream: assigned" in console.file.getvalue()
    ('', 1, True)
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._records: deque[logging.LogRecord] = deque()
        self._printer = RichHandler(console=console, show_path=False,
                                    log_time_format="%H:%M:%S", markup=False,
                                    rich_tracebacks=False)
        self._printer.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)  # a deque's appends and pops are thread-safe

    def drain(self) -> int:
        """Print every record kept so far (on the screen's thread); returns how many."""
        printed = 0
        while self._records:
            self._printer.handle(self._records.popleft())
            printed += 1
        return printed


def _logged_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, file: object = None, line: str | None = None) -> None:
    """`warnings.showwarning` as `logging.captureWarnings` has it, for the demo's span only."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text.rstrip())


@contextlib.contextmanager
def logs_above(console: Console) -> Iterator[LogRelay]:
    """Route every log record through `console` while the demo runs (see the module's doc);
    the caller prints them with the returned relay's `drain`, which runs once more on exit.

    The root logger's handlers are swapped, not added to, so nothing also writes to the raw
    terminal; they are put back on exit. Levels are untouched: `--log-level` still decides,
    and the swapped handlers' filters carry over (the CLI's quieting of the Kafka clients).
    """
    root = logging.getLogger()
    relay = LogRelay(console)
    saved = root.handlers[:]
    for replaced in saved:
        for kept in replaced.filters:
            relay.addFilter(kept)
    root.handlers = [relay]
    showwarning = warnings.showwarning
    warnings.showwarning = _logged_warning  # it would write to stderr from its own thread
    try:
        yield relay
    finally:
        warnings.showwarning = showwarning
        root.handlers = saved
        relay.drain()
