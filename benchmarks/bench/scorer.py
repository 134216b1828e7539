"""`stream run` in a subprocess, exactly as an operator starts it, and timed from its log.

Why a subprocess: the figure must be the shipped command's, including its CLI, settings and
client options, in a process of its own (one core's worth of Python, like production).

Why time from the log: Python start-up, imports, connecting and joining the group take a second
or two that has nothing to do with sustained throughput. The window therefore starts when the
scorer logs `partitions assigned` (the first moment it can fetch a record) and ends when it
prints its exit summary (after the last batch is flushed and committed and the clients are
closed). A reader thread stamps each stderr line with the benchmark's monotonic clock as it
arrives; both ends are stamped by the same clock, so no clock skew is involved.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any

_ASSIGNED = re.compile(r"partitions assigned: (?!none)")
_ASSIGNMENT = re.compile(r"partitions assigned: (.*)$")
_SUMMARY = re.compile(r"processed (\d+) records: (\d+) verdicts, (\d+) dead letters")
_WAITS = re.compile(r"(\d+) merchant waits given up")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the scorer gets SIGTERM if the benchmark dies, so no scorer is ever orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads: librdkafka's included),
    from /proc/<pid>/stat; None where there is no /proc or the process is gone.

    >>> cpu_seconds(os.getpid()) >= 0.0
    True
    """
    ticks = _stat_ticks(f"/proc/{pid}/stat")
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")


def _stat_ticks(path: str) -> int | None:
    """User + system clock ticks from a /proc `stat` file (a process's or one thread's);
    None if it cannot be read (no /proc, or the process or thread is gone)."""
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


# HotSpot's JIT compiler threads, as /proc names them (15 characters: "C2 CompilerThread0").
_COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def compiler_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a JVM's JIT compiler threads (a local broker's), from
    /proc/<pid>/task; None where there is no /proc or the process is gone. A broker compiles
    the code of every new kind of load it meets, for a minute on this machine, on the same
    cores as the scorer: a latency measured meanwhile measures the compiler too.

    >>> compiler_seconds(os.getpid()) in (0.0, None)  # a Python process has no JIT threads
    True
    """
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                if not fh.read().startswith(_COMPILER_THREADS):
                    continue
        except OSError:
            continue  # a thread that ended between the listing and the read
        total += _stat_ticks(f"/proc/{pid}/task/{tid}/stat") or 0
    return total / hz


def machine_seconds() -> tuple[float, float] | None:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat's first line (idle
    and iowait are not busy); None where there is no /proc. Two readings bound a window:
    its busy share says whether the machine had a core to spare.

    >>> reading = machine_seconds()
    >>> reading is None or 0.0 <= reading[0] <= reading[1]
    True
    """
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guests in user)
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def busy_share(before: tuple[float, float] | None,
               after: tuple[float, float] | None) -> float | None:
    """The share of all cores' time that was busy between two `machine_seconds` readings.

    >>> busy_share((10.0, 40.0), (28.0, 60.0))
    0.9
    >>> busy_share(None, (1.0, 2.0)) is None
    True
    """
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def count_inputs(assignment: str, topic: str) -> int:
    """Partitions of `topic` in a `partitions assigned: ...` log line's list.

    >>> count_inputs("tx[0], tx[3], labels[0], labels[3]", "tx")
    2
    """
    return sum(1 for part in assignment.split(", ") if part.startswith(topic + "["))


def stream_command(bootstrap: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "stream", "--bootstrap-servers", bootstrap,
            "--log-level", "INFO", *args]


def run_help() -> str:
    """`stream run --help`, to detect flags that other work may not have landed yet."""
    proc = subprocess.run([sys.executable, "-m", "stream", "run", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout + proc.stderr


def has_run_flag(flag: str, help_text: str | None = None) -> bool:
    text = run_help() if help_text is None else help_text
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


class ScorerProcess:
    """One `stream run` child: its stderr watched line by line, and always stopped."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None,
                 broker_pid: int | None = None) -> None:
        self.command = command
        self.env = env
        self.broker_pid = broker_pid  # a local broker: its CPU is read at the same moments
        self.lines: deque[str] = deque(maxlen=200)
        self.launched = 0.0
        self.assigned_at: float | None = None
        self.summary_at: float | None = None
        self.summary: tuple[int, int, int] | None = None
        # Waits for other instances' merchant events given up (the exit summary says so):
        # reads past them were served stale, so the instances no longer scored as one.
        self.merchant_waits = 0
        self.assignments = 0
        # The scorer's CPU seconds when the window opened and closed (cpu_seconds).
        self.cpu_at_assigned: float | None = None
        self.cpu_at_summary: float | None = None
        self.broker_cpu: list[float | None] = []  # at the window's opening and close
        self.assignment = ""  # the latest `partitions assigned` list
        self._assigned = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> ScorerProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.launched = time.monotonic()
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert self._proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self._proc.stderr,),
                                        name="scorer-stderr", daemon=True)
        self._reader.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            now = time.monotonic()
            self.lines.append(line.rstrip())
            listed = _ASSIGNMENT.search(line.rstrip())
            if listed:
                self.assignment = "" if listed[1] == "none" else listed[1]
            if _ASSIGNED.search(line):
                self.assignments += 1
                if self.assigned_at is None:
                    self.assigned_at = now
                    self.cpu_at_assigned = self._cpu()
                    self.broker_cpu.append(self._broker_cpu())
                    self._assigned.set()
            match = _SUMMARY.search(line)
            if match:
                self.summary_at = now
                self.cpu_at_summary = self._cpu()
                self.broker_cpu.append(self._broker_cpu())
                self.summary = (int(match[1]), int(match[2]), int(match[3]))
                waits = _WAITS.search(line)
                self.merchant_waits = int(waits[1]) if waits else 0
        self._assigned.set()  # the pipe closed: wake any waiter (it checks the process)

    def _cpu(self) -> float | None:
        return None if self._proc is None else cpu_seconds(self._proc.pid)

    def _broker_cpu(self) -> float | None:
        return None if self.broker_pid is None else cpu_seconds(self.broker_pid)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def tail(self, n: int = 15) -> str:
        return "\n".join(list(self.lines)[-n:])

    def wait_assigned(self, timeout_s: float) -> None:
        """Block until partitions are assigned; raise with the log tail if it exits first."""
        if not self._assigned.wait(timeout_s) or self.assigned_at is None:
            raise RuntimeError(f"scorer did not get partitions within {timeout_s:.0f}s "
                               f"(exit code {self.returncode}):\n{self.tail()}")

    def wait(self, timeout_s: float) -> int:
        """Wait for the scorer to exit on its own; raise (after stopping it) on timeout."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"scorer did not finish within {timeout_s:.0f}s:\n"
                               f"{self.tail()}") from None
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM (the scorer finishes its batch and commits), then SIGKILL; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass
class PipelineRun:
    """One drained topic: the throughput and how it was timed."""

    eps: float
    window_s: float
    startup_s: float
    wall_s: float
    verdicts: int
    dead_letters: int
    assignments: int  # more than 1: the group rebalanced inside the window
    # The scorer process's CPU seconds (every thread) inside the window, per million events:
    # what an operator budgets cores with. None without /proc.
    cpu_seconds_per_million: float | None = None
    broker_cpu_seconds_per_million: float | None = None  # a local broker's, same window


def scorer_env(changelog_topic: str) -> dict[str, str]:
    """The environment plus a changelog topic of the benchmark's own (set through the
    environment, which every version of `stream run` reads, flag or not)."""
    return {**os.environ, "FRAUDSTREAM_CHANGELOG_TOPIC": changelog_topic}


def run_pipeline(command: list[str], events: int, env: dict[str, str],
                 timeout_s: float, broker_pid: int | None = None) -> PipelineRun:
    """Run a `stream run --max-events N` command to completion and time its window."""
    with ScorerProcess(command, env, broker_pid) as scorer:
        code = scorer.wait(timeout_s)
        if code != 0:
            raise RuntimeError(f"`stream run` exited {code}:\n{scorer.tail()}")
        ended = time.monotonic()
        if scorer.assigned_at is None:
            raise RuntimeError(f"no 'partitions assigned' line in the scorer log:\n{scorer.tail()}")
        end = scorer.summary_at if scorer.summary_at is not None else ended
        window = end - scorer.assigned_at
        processed, verdicts, dead = scorer.summary or (events, events, 0)
        if processed != events:
            raise RuntimeError(f"scorer processed {processed} records, expected {events}")
        cpu = None
        if scorer.cpu_at_assigned is not None and scorer.cpu_at_summary is not None:
            cpu = (scorer.cpu_at_summary - scorer.cpu_at_assigned) / events * 1e6
        broker = None
        if len(scorer.broker_cpu) == 2 and None not in scorer.broker_cpu:
            opened, closed = scorer.broker_cpu
            assert opened is not None and closed is not None
            broker = (closed - opened) / events * 1e6
        return PipelineRun(
            eps=events / window if window > 0 else float("nan"),
            window_s=window,
            startup_s=scorer.assigned_at - scorer.launched,
            wall_s=ended - scorer.launched,
            verdicts=verdicts,
            dead_letters=dead,
            assignments=scorer.assignments,
            cpu_seconds_per_million=cpu,
            broker_cpu_seconds_per_million=broker,
        )
