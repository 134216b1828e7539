"""The bench's memory probe measures the merchant state the settings give the scorer."""

from __future__ import annotations

import pytest

from benchmarks.bench import memory


def test_the_table_probe_holds_one_row_per_merchant() -> None:
    # _rss_growth raises unless the table holds every merchant (and the warm one) at the end.
    result = memory.measure_table_merchants_here(3000)
    assert result["merchants"] == 3000 and result["bytes_per_merchant"] >= 0


@pytest.mark.parametrize(("state", "probe"), [("shared", "measure_table_merchants_here"),
                                              ("partition", "measure_extractor_merchants_here")])
def test_the_merchant_probe_follows_the_settings(monkeypatch: pytest.MonkeyPatch, state: str,
                                                 probe: str) -> None:
    called: list[str] = []
    for name in ("measure_table_merchants_here", "measure_extractor_merchants_here"):
        monkeypatch.setattr(memory, name, lambda *a, _n=name, **k: called.append(_n) or {})
    monkeypatch.setenv("FRAUDSTREAM_MERCHANT_STATE", state)
    monkeypatch.setenv("FRAUDSTREAM_MODEL_STATE", state)
    memory.measure_merchants_here(10)
    assert called == [probe]
