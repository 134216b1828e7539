"""The HTML comparison report renders in a real browser (headless Chromium) and is not blank.

Chromium is installed from Debian's `chromium` package when missing and we are root with
apt-get (as on CI); otherwise the test is skipped with the reason. The screenshot is also
saved to docs/compare-report.png for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from keys_support import KEY

from stream.batch.compare import compare_snapshots
from stream.batch.report import html_report
from stream.batch.source import file_items
from stream.batch.train import train_file
from stream.core.pipeline import PipelineConfig
from stream.core.scoring.model import ModelSpec
from stream.devtools.files import write_jsonl
from stream.devtools.synthetic import TrafficConfig, generate
from stream.state.snapshot import load_snapshot

DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "compare-report.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Chromium, and cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, capture_output=True, env=env, timeout=900)
    if done.returncode != 0:  # a fresh machine may need the package lists first
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, env=env, timeout=900)
    found = shutil.which("chromium")
    if done.returncode != 0 or not found:
        pytest.skip(f"could not install chromium: {done.stderr.decode()[-300:]}")
    return found


def _report(tmp: Path) -> Path:
    history, fresh = tmp / "history.jsonl", tmp / "fresh.jsonl"
    write_jsonl(generate(TrafficConfig(count=6000, fraud_rate=0.02, seed=11, n_cards=500)),
                history)
    write_jsonl(generate(TrafficConfig(count=4000, fraud_rate=0.02, seed=12, n_cards=500)),
                fresh)
    train_file(history, tmp / "a.snapshot", PipelineConfig(), "logreg-lr0.02-w5", key=KEY)
    train_file(history, tmp / "b.snapshot", PipelineConfig(model=ModelSpec(learning_rate=0.08)),
               "logreg-lr0.08-w5", key=KEY)
    comparison = compare_snapshots(load_snapshot(tmp / "a.snapshot", KEY),
                                   load_snapshot(tmp / "b.snapshot", KEY), file_items(fresh),
                                   PipelineConfig(),
                                   ("lr 0.02 (a.snapshot)", "lr 0.08 (b.snapshot)"))
    page = tmp / "report.html"
    page.write_text(html_report(comparison), encoding="utf-8")
    return page


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    browser = _browser()
    page = _report(tmp_path)
    png = tmp_path / "report.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}", "--window-size=1280,1760", page.as_uri()]
    done = subprocess.run(args, capture_output=True, timeout=120)
    assert png.is_file(), done.stderr.decode()[-2000:]
    with Image.open(png) as image:
        assert image.size == (1280, 1760)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        # A blank page is one colour; text, tables and five charts give hundreds.
        assert len(colours) > 50
        # The charts' line colours are present (blue champion, red challenger).
        assert any(abs(r - 0x1F) < 40 and abs(g - 0x6F) < 40 and b > 0xC0
                   for _, (r, g, b) in colours)
        assert any(r > 0xB0 and g < 0x60 and b < 0x60 for _, (r, g, b) in colours)
    # The docs build refreshes the README's screenshot on request only: a test run must not
    # modify the working tree.
    if os.environ.get("FRAUDSTREAM_UPDATE_DOCS") == "1":
        DOCS_PNG.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, DOCS_PNG)
