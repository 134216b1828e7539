"""The demo's summary as a terminal shows it: within 100 columns x 30 rows whatever the numbers,
cut rather than wrapped, every count labelled with what it counts; and log lines routed through
the live console. No broker: the registry is filled by hand."""

from __future__ import annotations

import io
import logging
import threading
import warnings

import pytest
from prometheus_client import CollectorRegistry
from rich.cells import cell_len
from rich.console import Console

from stream.devtools.demo_screen import (
    MAX_ROWS,
    MAX_WIDTH,
    TITLE,
    RunView,
    logs_above,
    scored_label,
    summary,
)
from stream.observability.metrics import Metrics

MODEL = "logreg-lr0.02-w5@0.1.0"
BOX = set("┌┐└┘├┤┬┴┼─│┏┓┗┛┣┫┳┻╋━┃╭╮╰╯")


def _registry(scale: int = 1) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.events.labels("scored").inc(12_345 * scale)
    metrics.events.labels("dead_lettered").inc(7 * scale)
    for decision, n in (("approve", 11_000), ("review", 1_000), ("decline", 345)):
        metrics.verdicts.labels(decision).inc(n * scale)
    metrics.roc_auc.labels(MODEL).set(0.91234)
    metrics.pr_auc.labels(MODEL).set(0.4)
    metrics.alert_rate.labels(MODEL).set(0.0412)
    metrics.label_rate.set(0.97)
    metrics.learned.inc(12_000 * scale)
    for partition in range(4):
        metrics.lag.labels("transactions", str(partition)).set(25 * scale)
    return registry


def _view(**changes: object) -> RunView:
    base = dict(produced=12_000, planned=200_000, earlier=345, per_second=2_013.4,
                elapsed_s=61.0, model=MODEL, window=10_000,
                metrics_url="localhost:9108/metrics", done=False)
    base.update(changes)
    return RunView(**base)  # type: ignore[arg-type]


def _screen(registry: CollectorRegistry, view: RunView, width: int = 100) -> list[str]:
    console = Console(width=width, height=45, record=True, file=io.StringIO(),
                      color_system=None)
    console.print(summary(registry, view))
    return console.export_text().rstrip("\n").splitlines()


@pytest.mark.parametrize("width", [100, 150])
def test_the_summary_fits_100_by_30(width: int) -> None:
    lines = _screen(_registry(), _view(), width)
    assert len(lines) <= MAX_ROWS
    assert max(cell_len(line.rstrip()) for line in lines) <= MAX_WIDTH
    assert sum(TITLE in line for line in lines) == 1 and TITLE in lines[0]


def test_huge_numbers_and_long_names_are_cut_not_wrapped() -> None:
    view = _view(produced=10**15, planned=10**15, earlier=10**15, per_second=1e12,
                 model="x" * 200, metrics_url="localhost:9108/" + "m" * 100, window=10**12)
    lines = _screen(_registry(scale=10**9), view, width=150)
    assert len(lines) <= MAX_ROWS
    assert max(cell_len(line.rstrip()) for line in lines) <= MAX_WIDTH
    body = lines[1:-1]  # between the title and the caption: nothing but table rows
    assert all(line.strip()[0] in BOX for line in body), body
    assert any("…" in line for line in body)  # cut, with an ellipsis
    assert sum("model" in line for line in body) == 1  # one row, not wrapped onto two


def test_every_count_says_what_it_counts() -> None:
    text = "\n".join(_screen(_registry(), _view()))
    for label in ("produced (this run)", "scored (this run, includes 345 left from earlier runs)",
                  "dead letters (this run)", "scored per second (last refresh)",
                  "approve / review / decline (this run)",
                  "rolling ROC AUC (latest <= 10,000 labels)", "labels learned (this run)",
                  "consumer lag (now, records)", "log lines scroll above this summary"):
        assert label in text, label
    assert "12,000 of 200,000" in text and "12,345" in text and "0.912" in text
    assert "89.1% / 8.1% / 2.8%" in text
    lag = next(line for line in text.splitlines() if "consumer lag" in line)
    assert lag.rstrip(" │┃").endswith(" 100")  # 4 partitions x 25


def test_the_scored_label_matches_what_earlier_runs_left() -> None:
    assert scored_label(0) == "scored (this run)"
    assert scored_label(1_500) == "scored (this run, includes 1,500 left from earlier runs)"
    assert "may include records left from earlier runs" in scored_label(None)


def test_a_finished_run_says_so_and_shows_no_stale_rate() -> None:
    text = "\n".join(_screen(_registry(), _view(done=True)))
    assert f"{TITLE} - finished" in text
    rate = next(line for line in text.splitlines() if "scored per second" in line)
    assert rate.rstrip(" │┃").endswith("-")


def test_before_any_label_the_model_metrics_show_a_dash() -> None:
    text = "\n".join(_screen(_registry(), _view(model="other-model")))
    auc = next(line for line in text.splitlines() if "rolling ROC AUC" in line)
    assert auc.rstrip(" │┃").endswith("-")


def test_log_lines_go_through_the_console_and_the_handlers_come_back() -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    console = Console(width=150, record=True, file=io.StringIO(), color_system=None)
    with logs_above(console):
        assert len(root.handlers) == 1
        logging.getLogger("stream.core.pipeline").warning("drift detected (loss, up)")
    assert root.handlers == before
    text = console.export_text()
    assert "WARNING" in text and "stream.core.pipeline: drift detected (loss, up)" in text


def test_only_the_screens_thread_writes_to_the_terminal() -> None:
    """Lines logged on other threads (the scorer's restores) wait for the demo's own thread:
    two threads writing while rich drew the summary left its title and border behind, above
    the log lines (seen once in a clean-clone CI run of the tmux test)."""
    console = Console(width=150, file=io.StringIO(), color_system=None)
    writers: list[str] = []
    console.file.write = lambda text: writers.append(threading.current_thread().name) or len(
        text)  # type: ignore[method-assign]
    with logs_above(console) as relay:
        thread = threading.Thread(target=lambda: [
            logging.getLogger("stream.serving").warning("restored changelog[%d]", i)
            for i in range(50)], name="scorer")
        thread.start()
        thread.join()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            other = threading.Thread(target=lambda: warnings.warn(
                "a client's deprecation", DeprecationWarning, stacklevel=1), name="client")
            other.start()
            other.join()
        assert writers == []
        assert relay.drain() == 51
    assert writers and set(writers) == {threading.current_thread().name}
