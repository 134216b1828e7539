"""A progress bar for the batch commands, on stderr and only when it is a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Tick = Callable[..., None]
_EVERY_S = 0.1


@contextmanager
def progress_bar(label: str, total: int | None, enabled: bool = True) -> Iterator[Tick]:
    """Yield `tick(done, final=False)`; it redraws at most every 0.1 s, so it is cheap per event.

    Logs and pipes stay clean: nothing is drawn unless stderr is a terminal (or rich is forced
    to draw with `FORCE_COLOR` / `TTY_COMPATIBLE=1`).
    """
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda done, final=False: None
        return
    columns: list[Any] = [TextColumn(f"[bold]{label}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns.append(TextColumn("{task.completed:,.0f} events"))
    columns += [TextColumn("{task.fields[speed]} events/s"), TimeElapsedColumn()]
    started = time.perf_counter()
    last = 0.0
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, speed="-")

        def tick(done: int, final: bool = False) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last < _EVERY_S and not final:
                return
            last = now
            speed = done / (now - started) if now > started else 0.0
            bar.update(task, completed=done, speed=f"{speed:,.0f}")

        yield tick
