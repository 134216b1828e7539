"""Resident bytes per card and per merchant of feature state, measured in a fresh process.

Why a subprocess: RSS is a property of the whole process. In the benchmark's own process, the
pre-filled event list, the clients and the freed-but-kept heap of earlier phases would blur it;
a fresh interpreter that imports the feature layer, builds one FeatureExtractor (configured as
the scorer's partitions are: no change tracking) and then feeds one transaction per distinct card
shows only what the cards cost. RSS comes from /proc/self/statm after `gc.collect()`, before and
after, divided by the number of cards. It includes the key strings, the dict's slots and its
over-allocation, and allocator overhead: what a production process actually pays.

Card ids look like the synthetic ones (`card-0000042`, 12 characters); real tokenised card ids
are often longer, and each extra character costs one byte per card. Merchants are measured the
same way (`merchant-0000042`, 16 characters), each with one transaction and one label, so
their label windows are counted too, in the merchant state the settings give the scorer: a
partition's own (`merchant_state = "partition"`; the transactions come from 1,000 cards, whose
state is in place before the first reading), or the shared merchant table (the default), each
merchant's row after the table has folded its events and let go of the copies kept for reads
behind the frontier (as the scorer does every `TIDY_EVERY` events; the copies in that window
are a matter of traffic in `delta + lateness` of event time, not of how many merchants there
are).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (field 2, in pages)."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _extractor() -> Any:
    """One FeatureExtractor configured as the scorer's partitions are (no change tracking)."""
    from stream.core.features.extractor import FeatureExtractor
    from stream.core.pipeline import PipelineConfig

    config = PipelineConfig()
    return FeatureExtractor(horizons_s=config.horizons_s, card_ttl_s=config.card_ttl_s,
                            merchant_ttl_s=config.merchant_ttl_s,
                            merchant_prior=config.merchant_prior, track_changes=False)


def measure_here(cards: int) -> dict[str, Any]:
    """Feed `cards` distinct cards into one FeatureExtractor and report RSS growth per card."""
    from stream.contracts.messages import Transaction

    fx = _extractor()
    merchants = [f"m-{i:05d}" for i in range(400)]
    fx.extract(Transaction("warm", "warm-card", merchants[0], 1.0, 1.7e9))  # first-call paths
    t0 = 1.7e9

    def fill() -> int:
        for i in range(cards):
            fx.extract(Transaction(f"tx-{i}", f"card-{i:07d}", merchants[i % 400],
                                   5.0 + (i % 997) * 0.37, t0 + i * 0.05))
        return int(fx.n_cards)

    return _rss_growth(fill, "card", cards)


def measure_merchants_here(merchants: int, cards: int = 1000) -> dict[str, Any]:
    """RSS growth per merchant of the merchant state the settings (defaults < environment)
    give the scorer: the shared table (`measure_table_merchants_here`) or a partition's own."""
    from stream.config import load_settings

    if load_settings().merchant_state == "shared":
        return measure_table_merchants_here(merchants)
    return measure_extractor_merchants_here(merchants, cards)


def measure_table_merchants_here(merchants: int) -> dict[str, Any]:
    """Fold one transaction and one label for each of `merchants` distinct merchants into a
    shared merchant table configured as the scorer's (one partition, its view emitting them
    as a partition task does) and report RSS growth per merchant, after the copies for reads
    behind the frontier are let go."""
    from stream.core.features.merchant_table import MerchantTable, TableView
    from stream.core.pipeline import TIDY_EVERY, PipelineConfig

    config = PipelineConfig()
    table = MerchantTable(1, config.merchant_prior, config.merchant_delta_s,
                          config.merchant_ttl_s)
    view = TableView(table, 0, config.merchant_lateness_s)
    t0 = 1.7e9
    view.transaction("warm-merchant", t0)
    view.label("warm-merchant", False, t0)

    behind = config.merchant_lateness_s + config.merchant_delta_s

    def fill() -> int:
        for i in range(merchants):
            ts = t0 + (i + 1) * 0.05
            merchant = f"merchant-{i:07d}"
            view.transaction(merchant, ts)
            view.label(merchant, i % 100 == 0, ts)
            if i % TIDY_EVERY == 0:  # the scorer's tidy: copies no read can ask for
                table.release(ts - behind)
        view.lookahead(float("inf"))  # nothing more will come: the frontier passes it all
        table.release(t0 + (merchants + 1) * 0.05)
        return len(table)

    return _rss_growth(fill, "merchant", merchants)


def measure_extractor_merchants_here(merchants: int, cards: int = 1000) -> dict[str, Any]:
    """Feed one transaction and one label for each of `merchants` distinct merchants into one
    FeatureExtractor (a partition's own merchant state) and report RSS growth per merchant."""
    from stream.contracts.messages import Transaction

    fx = _extractor()
    card_ids = [f"card-{i:07d}" for i in range(cards)]
    t0 = 1.7e9
    for i, card in enumerate(card_ids):  # the cards' state first: only merchants grow after
        fx.extract(Transaction(f"warm-{i}", card, "warm-merchant", 5.0, t0 + i * 0.05))
    fx.learn_label("warm-merchant", False, t0 + cards * 0.05)

    def fill() -> int:
        for i in range(merchants):
            ts = t0 + (cards + i) * 0.05
            merchant = f"merchant-{i:07d}"
            fx.extract(Transaction(f"tx-{i}", card_ids[i % cards], merchant,
                                   5.0 + (i % 997) * 0.37, ts))
            fx.learn_label(merchant, i % 100 == 0, ts)
        return int(fx.n_merchants)

    return _rss_growth(fill, "merchant", merchants)


def _rss_growth(fill: Callable[[], int], what: str, count: int) -> dict[str, Any]:
    """RSS after `gc.collect()` before and after `fill` adds `count` keys of `what` to state
    already holding one (its return: the keys held), per key."""
    gc.collect()
    before = rss_bytes()
    held = fill()
    gc.collect()
    after = rss_bytes()
    if held != count + 1:
        raise RuntimeError(f"expected {count + 1} {what}s in state, found {held}")
    return {f"{what}s": count, "rss_before": before, "rss_after": after,
            f"bytes_per_{what}": (after - before) / count}


def measure(cards: int, timeout_s: float = 600, what: str = "--cards") -> dict[str, Any]:
    """Run `measure_here` (or, with what="--merchants", `measure_merchants_here`) in a fresh
    interpreter and return its JSON result."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench.memory", what, str(cards)],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Resident bytes per card or merchant of feature state.")
    parser.add_argument("--cards", type=int, default=None)
    parser.add_argument("--merchants", type=int, default=None)
    args = parser.parse_args(argv)
    if args.merchants is not None:
        print(json.dumps(measure_merchants_here(args.merchants)))
    else:
        print(json.dumps(measure_here(args.cards if args.cards is not None else 1_000_000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
