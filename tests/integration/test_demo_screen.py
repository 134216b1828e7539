"""`stream demo` as a person sees it: in a 150x45 tmux pane, against the real broker.

Records are left on the demo's input topic beforehand (as an interrupted earlier run would
leave them), then the demo runs while the pane is captured every second or so. Every capture
must show the summary once, whole, within 100x30, with log lines only above it; the counts must
say what they count, including the records the earlier "run" left.

A session fixture finds `tmux`, installing Debian's package when running as root with apt-get
(as CI does), else skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from stream.devtools.broker import find_free_port
from stream.devtools.demo_screen import MAX_ROWS, MAX_WIDTH, TITLE

ROOT = Path(__file__).resolve().parents[2]
CAPTION = "log lines scroll above this summary"
BOX = set("┌┐└┘├┤┬┴┼─│┏┓┗┛┣┫┳┻╋━┃╭╮╰╯")
LOG_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b +[\w.]+: ")
EARLIER, COUNT = 300, 3000


def _apt_install(package: str) -> str:
    """Install a Debian package; '' on success, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None:
        return "no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=900)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        return f"apt-get install {package} failed: {result.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def tmux() -> str:
    found = shutil.which("tmux")
    if found is None:
        why = _apt_install("tmux")
        found = shutil.which("tmux")
        if found is None:
            pytest.skip(f"tmux not on PATH and not installable: {why or '?'}")
    return found


@pytest.fixture
def demo_config(tmp_path: Path, admin: Any) -> Iterator[Path]:
    """Topic and group names of this test only, as a config file; topics deleted afterwards."""
    prefix = f"it-demo-{uuid.uuid4().hex[:8]}"
    names = {"input_topic": f"{prefix}.transactions", "labels_topic": f"{prefix}.labels",
             "output_topic": f"{prefix}.verdicts", "dlq_topic": f"{prefix}.dlq",
             "changelog_topic": f"{prefix}.changelog"}
    path = tmp_path / "demo.toml"
    lines = [f'{key} = "{value}"' for key, value in names.items()]
    path.write_text("\n".join([*lines, f'group_id = "{prefix}"', ""]))
    yield path
    existing = set(admin.list_topics())
    doomed = [name for name in names.values() if name in existing]
    if doomed:
        admin.delete_topics(doomed, raise_errors=False)


def _stream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


class Pane:
    """A detached tmux session on a server of its own (its own socket), killed at the end."""

    def __init__(self, tmux: str, command: str) -> None:
        self.tmux = [tmux, "-L", f"fraudstream-{uuid.uuid4().hex[:8]}"]
        # An explicit environment: under pytest the process environment can hold COLUMNS=80
        # and LINES=24 below os.environ (readline exports them), which would make rich draw
        # for an 80x24 terminal inside the 150x45 pane. A person's terminal has none.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "demo", "-x", "150", "-y", "45",
                        command], check=True, cwd=ROOT, env=env, timeout=30)
        self.socket = subprocess.run([*self.tmux, "display-message", "-p", "#{socket_path}"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()

    def capture(self) -> list[str]:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "demo"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return out.rstrip("\n").split("\n")

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)
        if self.socket:  # kill-server leaves the socket file behind
            Path(self.socket).unlink(missing_ok=True)


def check_screen(lines: list[str]) -> tuple[int, int]:
    """The screen invariants; returns the summary's first and last row."""
    headers = [i for i, line in enumerate(lines) if TITLE in line]
    assert len(headers) == 1, "\n".join(lines)
    top = headers[0]
    captions = [i for i, line in enumerate(lines) if CAPTION in line]
    assert len(captions) == 1 and captions[0] > top, "\n".join(lines)
    bottom = captions[0]
    block = lines[top:bottom + 1]
    assert len(block) <= MAX_ROWS
    assert all(cell_len(line.rstrip()) <= MAX_WIDTH for line in block), "\n".join(block)
    # Between the title and the caption: table rows only, never a log line in between.
    assert all(line.strip()[:1] in BOX for line in block[1:-1]), "\n".join(block)
    below = [line for line in lines[bottom + 1:] if line.strip()]
    assert all(line.startswith("DEMO-EXIT=") for line in below), "\n".join(lines)
    assert not any(LOG_LINE.search(line) for line in lines[top:]), "\n".join(lines)
    return top, bottom


def test_the_demo_screen_stays_readable(tmux: str, kafka_bootstrap: str,
                                        demo_config: Path) -> None:
    applied = _stream("topics", "apply", "--bootstrap-servers", kafka_bootstrap,
                      "--config", str(demo_config))
    assert applied.returncode == 0, applied.stderr
    left = _stream("produce", "--count", str(EARLIER), "--no-progress", "--seed", "3",
                   "--config", str(demo_config), "--bootstrap-servers", kafka_bootstrap)
    assert left.returncode == 0, left.stderr

    command = (f"{sys.executable} -m stream demo --count {COUNT} --rate 500 --seconds 20 "
               f"--metrics-port {find_free_port()} --bootstrap-servers {kafka_bootstrap} "
               f"--config {demo_config}; echo DEMO-EXIT=$?; sleep 600")
    pane = Pane(tmux, command)
    captures: list[list[str]] = []
    final: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            lines = pane.capture()
            if any(line.startswith("DEMO-EXIT=") for line in lines):
                final = lines
                break
            if any(TITLE in line for line in lines):
                captures.append(lines)
            time.sleep(0.7)
        else:
            pytest.fail("the demo did not end in time:\n" + "\n".join(pane.capture()))
    finally:
        pane.close()

    assert "DEMO-EXIT=0" in final, "\n".join(final)
    assert len(captures) >= 3, "too few captures while the summary was up"
    for lines in [*captures, final]:
        check_screen(lines)
        text = "\n".join(lines)
        assert "produced (this run)" in text, text
        assert f"scored (this run, includes {EARLIER:,} left from earlier runs)" in text, text
    # The final screen: every record of both runs scored, and each number says whose it is.
    top, bottom = check_screen(final)
    summary = "\n".join(final[top:bottom + 1])
    assert f"{TITLE} - finished" in summary
    assert re.search(rf"produced \(this run\) +│ +{COUNT:,} of {COUNT:,} ", summary), summary
    scored = rf"left from earlier runs\) +│ +{COUNT + EARLIER:,} "
    assert re.search(scored, summary), summary
    assert any(LOG_LINE.search(line) for line in final[:top]), "expected log lines above"
