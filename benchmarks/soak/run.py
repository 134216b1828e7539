"""One soak run: a local broker, a scorer process, steady traffic, faults on a schedule, and
samples of the scorer's memory and consumer lag; then the accounting (check.py).

The scorer runs as `python -m stream run` in a process of its own, as in production, so a
SIGKILL is real and its resident memory (VmRSS from /proc) is the scorer's alone. The
broker is a `LocalBroker` the run owns, so it can be stopped and started on its log dir.
Faults are spread evenly over the run (broker restarts and scorer kills alternating); after
each one the run records how long the consumer lag took to come back to normal.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soak.check import account
from benchmarks.soak.summary import recovered_after, rss_segments, rss_summary
from benchmarks.soak.traffic import SteadyTraffic
from stream.config import load_settings
from stream.devtools.broker import LocalBroker, find_free_port
from stream.kafka.clients import Clients, connect

log = logging.getLogger("benchmarks.soak")
MIB = 1024 * 1024
# A SIGKILLed scorer leaves its transaction open, and read_committed readers cannot read past
# it until the broker aborts it: after transaction.timeout.ms (the scorer sets 60 s), checked
# every 10 s (transaction.abort.timed.out.transaction.cleanup.interval.ms).
ZOMBIE_TRANSACTION_S = 80.0


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 30.0
    rate: float = 400.0
    broker_restarts: int = 1
    kills: int = 1
    kafka_client: str = "librdkafka"
    partitions: int = 4
    sample_s: float = 10.0
    outage_s: float = 10.0
    cards: int = 20_000
    drain_timeout_s: float = 300.0


@dataclass
class Fault:
    kind: str  # "broker_restart" or "scorer_kill"
    at_s: float
    recovered_after_s: float | None = None


def schedule(config: SoakConfig) -> list[tuple[float, str]]:
    """Faults spread evenly over the run, alternating, broker restarts first.

    >>> schedule(SoakConfig(minutes=30, broker_restarts=1, kills=1))
    [(600.0, 'broker_restart'), (1200.0, 'scorer_kill')]
    """
    kinds: list[str] = []
    restarts, kills = config.broker_restarts, config.kills
    while restarts or kills:
        if restarts:
            kinds.append("broker_restart")
            restarts -= 1
        if kills:
            kinds.append("scorer_kill")
            kills -= 1
    span = config.minutes * 60.0
    return [(round(span * (i + 1) / (len(kinds) + 1), 1), kind) for i, kind in enumerate(kinds)]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a live process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MIB
    except OSError:
        return None
    return None


class Scorer:
    """`stream run` in a child process, its log in a file (a pipe could fill and block it)."""

    def __init__(self, bootstrap: str, topics: dict[str, str], group: str, client: str,
                 log_dir: Path) -> None:
        self.args = [sys.executable, "-m", "stream", "--bootstrap-servers", bootstrap,
                     "--kafka-client", client, "run", "--group-id", group,
                     "--session-timeout-ms", "6000",
                     *(arg for role, name in topics.items() for arg in (f"--{role}", name))]
        self.log_dir = log_dir
        self.started = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.started += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
        with open(self.log_dir / f"scorer-{self.started}.log", "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         env=env)
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and the exit code (SIGKILL if it does not stop in time: -9)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def lag(clients: Clients, topic: str, partitions: int) -> int | None:
    """Input records not yet committed by the group (None while the broker does not say)."""
    sources = [(topic, p) for p in range(partitions)]
    reader = None
    try:
        reader = clients.reader()
        ends = {s: reader.watermarks(s, 5.0)[1] for s in sources}
        committed = clients.committed(sources, 5.0)
    except Exception:  # noqa: BLE001 - the broker is restarting: no sample this time
        return None
    finally:
        if reader is not None:
            reader.close()
    return sum(max(0, ends[s] - (committed.get(s) or 0)) for s in sources)


@dataclass
class Run:
    config: SoakConfig
    samples: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)


def soak(config: SoakConfig, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the soak and return its report (see benchmarks/soak/__main__.py)."""
    own_dir = work_dir is None
    base = Path(tempfile.mkdtemp(prefix="fraud-stream-soak-")) if work_dir is None else work_dir
    broker = LocalBroker(port=find_free_port(), data_dir=base / "broker")
    try:
        bootstrap = broker.start(timeout_s=120)
        return _soak(config, broker, bootstrap, base)
    finally:
        broker.stop()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


def _soak(config: SoakConfig, broker: LocalBroker, bootstrap: str, base: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    topics = {"input-topic": f"soak-tx-{run_id}", "labels-topic": f"soak-labels-{run_id}",
              "output-topic": f"soak-verdicts-{run_id}", "dlq-topic": f"soak-dlq-{run_id}",
              "changelog-topic": f"soak-changelog-{run_id}"}
    group = f"soak-{run_id}"
    settings = load_settings(environ={}, bootstrap_servers=bootstrap, group_id=group,
                             kafka_client=config.kafka_client)
    clients = connect(settings)
    admin = clients.admin()
    p = config.partitions
    admin.create_topics({
        topics["input-topic"]: (p, 1, {}), topics["labels-topic"]: (p, 1, {}),
        topics["output-topic"]: (p, 1, {}), topics["dlq-topic"]: (1, 1, {}),
        topics["changelog-topic"]: (p, 1, {"cleanup.policy": "compact"}),
    })
    admin.close()
    scorer = Scorer(bootstrap, topics, group, config.kafka_client, base)
    traffic = SteadyTraffic(clients, topics["input-topic"], config.rate, cards=config.cards)
    try:
        return _drive(config, broker, clients, topics, scorer, traffic)
    finally:
        if scorer.alive():  # an error or an interrupt: leave no scorer running
            scorer.kill()


def _drive(config: SoakConfig, broker: LocalBroker, clients: Clients, topics: dict[str, str],
           scorer: Scorer, traffic: SteadyTraffic) -> dict[str, Any]:
    run = Run(config)
    pid = scorer.start()
    started = time.monotonic()
    traffic.start()
    pending = schedule(config)
    end = started + config.minutes * 60.0
    next_sample = started
    while time.monotonic() < end:
        now = time.monotonic()
        if pending and now - started >= pending[0][0]:
            _, kind = pending.pop(0)
            run.faults.append(Fault(kind, round(now - started, 1)))
            pid = _inject(kind, config, broker, scorer, pid)
        if now >= next_sample:
            _sample(run, clients, topics["input-topic"], pid, started, traffic)
            next_sample = max(next_sample + config.sample_s, time.monotonic())
        time.sleep(0.2)
    traffic.stop()
    drained = _drain(run, clients, topics["input-topic"], scorer, started, traffic)
    exit_code = scorer.terminate()
    _await_zombie_transactions(run, started)
    accounting = account(clients, topics["input-topic"], topics["output-topic"],
                         topics["dlq-topic"])
    return _report(run, traffic, drained, exit_code, accounting.as_dict())


def _await_zombie_transactions(run: Run, started: float) -> None:
    kills = [f.at_s for f in run.faults if f.kind == "scorer_kill"]
    if kills:
        wait = started + max(kills) + ZOMBIE_TRANSACTION_S - time.monotonic()
        if wait > 0:
            log.info("soak: %.0f s for the killed scorer's transaction to be aborted", wait)
            time.sleep(wait)


def _inject(kind: str, config: SoakConfig, broker: LocalBroker, scorer: Scorer, pid: int) -> int:
    if kind == "broker_restart":
        log.info("soak: stopping the broker for %.0f s", config.outage_s)
        broker.stop()
        time.sleep(config.outage_s)
        broker.start(timeout_s=120)
        log.info("soak: broker back")
        return pid
    log.info("soak: SIGKILL to the scorer (pid %d), and a new one", pid)
    scorer.kill()
    return scorer.start()


def _sample(run: Run, clients: Clients, topic: str, pid: int, started: float,
            traffic: SteadyTraffic) -> None:
    now = time.monotonic() - started
    rss = rss_mib(pid)
    behind = lag(clients, topic, run.config.partitions)
    run.samples.append({"t_s": round(now, 1), "pid": pid,
                        "rss_mib": None if rss is None else round(rss, 1),
                        "lag": behind, "produced": traffic.total})
    log.info("soak %6.0fs: rss %s MiB, lag %s, produced %d", now, run.samples[-1]["rss_mib"],
             behind, traffic.total)


def _drain(run: Run, clients: Clients, topic: str, scorer: Scorer, started: float,
           traffic: SteadyTraffic) -> float | None:
    """Seconds after the traffic stopped until the lag was 0 (None: not within the bound)."""
    stopped = time.monotonic()
    while time.monotonic() - stopped < run.config.drain_timeout_s:
        _sample(run, clients, topic, scorer.proc.pid if scorer.proc else 0, started, traffic)
        if run.samples[-1]["lag"] == 0:
            return round(time.monotonic() - stopped, 1)
        time.sleep(2.0)
    return None


def _report(run: Run, traffic: SteadyTraffic, drained: float | None, exit_code: int,
            accounting: dict[str, Any]) -> dict[str, Any]:
    normal = max(100.0, run.config.rate)  # about a second of traffic
    times = recovered_after(run.samples, [f.at_s for f in run.faults], normal)
    for fault, after in zip(run.faults, times, strict=True):
        fault.recovered_after_s = after
    recovered = all(f.recovered_after_s is not None for f in run.faults)
    ok = accounting["ok"] and drained is not None and recovered and exit_code == 0
    return {
        "config": run.config.__dict__,
        "ok": ok,
        "sent": dict(traffic.sent),
        "failed_deliveries": traffic.failed_deliveries,
        "accounting": accounting,
        "lag_drained_after_s": drained,
        "faults": [f.__dict__ for f in run.faults],
        "rss": {**rss_summary(run.samples),
                "segments": rss_segments(run.samples, [f.at_s for f in run.faults])},
        "scorer_exit_code": exit_code,
        "samples": run.samples,
    }
