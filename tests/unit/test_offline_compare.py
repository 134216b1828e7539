"""`stream compare`: a snapshot against itself is exactly zero; the HTML is self-contained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from keys_support import KEY, key_file
from sklearn.metrics import average_precision_score, roc_auc_score

from stream.batch.compare import Row, compare_snapshots, summarise
from stream.batch.report import html_report, text_report
from stream.batch.source import file_items
from stream.batch.train import train_file
from stream.cli.app import app, main
from stream.cli.batch import register
from stream.core.pipeline import PipelineConfig
from stream.core.scoring.model import ModelSpec
from stream.core.scoring.policy import Policy
from stream.devtools.files import write_jsonl
from stream.devtools.synthetic import TrafficConfig, generate
from stream.state.snapshot import load_snapshot

if not any(command.name == "train" for command in app.registered_commands):
    register(app)


def _history(path: Path, count: int, seed: int) -> Path:
    write_jsonl(generate(TrafficConfig(count=count, fraud_rate=0.03, seed=seed, n_cards=300,
                                       n_merchants=80)), path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("compare")
    history = _history(tmp / "history.jsonl", 3000, seed=1)
    fresh = _history(tmp / "fresh.jsonl", 2000, seed=2)
    train_file(history, tmp / "a.snapshot", PipelineConfig(), "model-a", key=KEY)
    train_file(history, tmp / "b.snapshot", PipelineConfig(model=ModelSpec(learning_rate=0.1)),
               "model-b", key=KEY)
    return {"a": tmp / "a.snapshot", "b": tmp / "b.snapshot", "fresh": fresh, "tmp": tmp}


def test_a_snapshot_compared_with_itself_is_exactly_zero(trained: dict[str, Path]) -> None:
    snap = load_snapshot(trained["a"], KEY)
    result = compare_snapshots(snap, load_snapshot(trained["a"], KEY),
                               file_items(trained["fresh"]), PipelineConfig())
    assert result.events == 2000 and result.identical
    assert result.max_abs_diff == 0.0 and result.mean_abs_diff == 0.0 and result.agreement == 1.0
    assert result.a.metrics == result.b.metrics
    assert "IDENTICAL" in text_report(result)


def test_different_models_differ_and_each_gets_its_own_metrics(trained: dict[str, Path]) -> None:
    a, b = load_snapshot(trained["a"], KEY), load_snapshot(trained["b"], KEY)
    result = compare_snapshots(a, b, file_items(trained["fresh"]), PipelineConfig())
    assert not result.identical and result.max_abs_diff > 0 and result.agreement < 1
    assert result.a.model == "model-a" and result.b.model == "model-b"
    assert result.a.metrics.roc_auc != result.b.metrics.roc_auc
    assert sum(result.decisions.values()) == 2000
    assert result.a.rolling_auc and result.a.roc.x[0] == 0.0 and result.a.roc.y[-1] == 1.0


def test_summary_metrics_match_scikit_learn() -> None:
    rows = [Row(f"t{i}", float(i), a, b) for i, (a, b) in enumerate(
        [(0.9, 0.8), (0.1, 0.3), (0.7, 0.2), (0.4, 0.6), (0.2, 0.1), (0.65, 0.9)])]
    labels = {"t0": True, "t1": False, "t2": True, "t3": False, "t4": False}  # t5 unlabelled
    result = summarise(rows, labels, ("A", "B"), ("a", "b"), Policy(0.3, 0.6), window=50)
    y = [True, False, True, False, False]
    a, b = [0.9, 0.1, 0.7, 0.4, 0.2], [0.8, 0.3, 0.2, 0.6, 0.1]
    assert result.a.metrics.roc_auc == pytest.approx(roc_auc_score(y, a))
    assert result.b.metrics.pr_auc == pytest.approx(average_precision_score(y, b))
    assert result.a.metrics.labelled == 5 and result.a.metrics.positives == 2
    assert result.max_abs_diff == pytest.approx(0.5)
    assert result.mean_abs_diff == pytest.approx((0.1 + 0.2 + 0.5 + 0.2 + 0.1 + 0.25) / 6)
    assert result.agreement == pytest.approx(3 / 6)  # t0, t4 and t5 agree
    assert result.a.metrics.alert_rate == pytest.approx(4 / 6)


def test_html_report_is_self_contained(trained: dict[str, Path]) -> None:
    a, b = load_snapshot(trained["a"], KEY), load_snapshot(trained["b"], KEY)
    result = compare_snapshots(a, b, file_items(trained["fresh"]), PipelineConfig(), ("a", "b"))
    page = html_report(result)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") == 5 and page.count("</svg>") == 5
    assert "<polyline" in page
    for forbidden in ("<script", "<link", "<img", "@import", "url(", "src="):
        assert forbidden not in page, forbidden
    # The only URL is the SVG namespace, which a browser never fetches.
    urls = set(re.findall(r"https?://[^\"' )]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize("state", ["partition", "shared"])
def test_cli_train_then_compare_self(trained: dict[str, Path], capsys: pytest.CaptureFixture[
        str], monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    """Also with the shared merchant table and champion configured (`stream train`, `replay
    --file` and `compare` once stopped with a traceback: the shared champion learns through
    a table the batch pipelines did not have)."""
    monkeypatch.setenv("FRAUDSTREAM_MERCHANT_STATE", state)
    monkeypatch.setenv("FRAUDSTREAM_MODEL_STATE", state)
    tmp = trained["tmp"]
    keyed = ["--state-key-file", str(key_file(tmp))]  # the key the fixture's snapshots have
    with pytest.raises(SystemExit) as exited:
        main(["train", "--file", str(trained["fresh"]), "--out", str(tmp / "cli.snapshot"),
              "--label-delay", "86400", "--no-progress", *keyed])
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert "trained on 2,000 transactions" in out and "ROC AUC" in out and "PR AUC" in out
    with pytest.raises(SystemExit) as exited:
        main(["replay", "--file", str(trained["fresh"]), "--init-from",
              str(tmp / "cli.snapshot"), "--out", str(tmp / "replayed.snapshot"),
              "--no-progress", *keyed])
    assert exited.value.code in (0, None)
    assert "replayed 2,000 transactions" in capsys.readouterr().out
    html = tmp / "report.html"
    with pytest.raises(SystemExit) as exited:
        main(["compare", str(tmp / "cli.snapshot"), str(tmp / "cli.snapshot"), "--file",
              str(trained["fresh"]), "--html", str(html), "--fail-on-difference", *keyed])
    assert exited.value.code in (0, None)
    assert "IDENTICAL" in capsys.readouterr().out and html.stat().st_size > 10_000
    with pytest.raises(SystemExit) as exited:
        main(["compare", str(trained["a"]), str(trained["b"]), "--file",
              str(trained["fresh"]), "--fail-on-difference", *keyed])
    assert exited.value.code == 3


@pytest.mark.parametrize("argv, message", [
    (["train", "--file", "/nonexistent.jsonl", "--out", "x.snapshot"], "file not found"),
    (["compare", "/nonexistent.snapshot", "--live"], "snapshot not found"),
])
def test_cli_user_errors_are_one_line(argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_compare_rejects_a_non_snapshot(trained: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["compare", str(trained["fresh"]), str(trained["a"]), "--file",
              str(trained["fresh"])])
    assert exited.value.code == 1
    assert "not a fraud-stream snapshot" in capsys.readouterr().err
