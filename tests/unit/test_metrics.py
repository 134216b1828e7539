"""Every labelled counter that dashboards and alerts query exists at zero from the start, for
every label value the scorer can produce: `increase(x[5m]) > 0` only sees a first increment
when the series was already there before it."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.contracts.codec import REASONS
from stream.observability.metrics import LABEL_OUTCOMES, Metrics

STREAM = Path(__file__).resolve().parents[2] / "stream"


def test_every_dead_letter_reason_starts_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    for reason in REASONS:
        assert registry.get_sample_value(
            "fraudstream_dead_letters_total", {"reason": reason}) == 0.0, reason


def test_every_label_outcome_starts_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    assert ("event", "received") in LABEL_OUTCOMES and ("topic", "learned") in LABEL_OUTCOMES
    for source, outcome in LABEL_OUTCOMES:
        assert registry.get_sample_value(
            "fraudstream_labels_total", {"source": source, "outcome": outcome}) == 0.0


def test_the_other_labelled_counters_start_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    expected = {
        "fraudstream_events_total": [{"outcome": o} for o in ("scored", "dead_lettered")],
        "fraudstream_verdicts_total": [{"decision": d} for d in ("approve", "review", "decline")],
        "fraudstream_commits_total": [{"result": r} for r in ("ok", "failed")],
        "fraudstream_recoveries_total": [{"reason": r}
                                         for r in ("infrastructure", "group_moved")],
        "fraudstream_drift_detected_total": [{"kind": k, "direction": d}
                                             for k in ("loss", "psi") for d in ("up", "down")],
    }
    for name, label_sets in expected.items():
        for labels in label_sets:
            assert registry.get_sample_value(name, labels) == 0.0, (name, labels)


def _literals(pattern: str) -> set[str]:
    found: set[str] = set()
    for path in STREAM.rglob("*.py"):
        found.update(re.findall(pattern, path.read_text()))
    return found


def test_the_reason_list_names_every_reason_the_code_gives() -> None:
    """A reason code added in the code but not to REASONS would have no zero series."""
    given = (_literals(r'DecodeError\(\s*"([a-z_]+)"')
             | _literals(r'dead_letter\([^"\n()]*"([a-z_]+)"'))
    assert "processing_error" in given
    assert given and given <= set(REASONS), given - set(REASONS)


def test_the_label_outcomes_name_every_pair_the_code_counts() -> None:
    given = {tuple(pair) for pair in re.findall(
        r'metrics\.labels\.labels\("([a-z]+)", "([a-z]+)"\)',
        "".join(p.read_text() for p in STREAM.rglob("*.py")))}
    assert given <= set(LABEL_OUTCOMES)
    # The topic outcomes come from the pipeline's LabelOutcome values.
    assert {("topic", "learned"), ("topic", "held")} <= set(LABEL_OUTCOMES)
