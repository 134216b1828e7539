"""The core's configuration, as plain values (built from Settings by the serving wiring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.core.evaluation.oversight import OversightConfig
from stream.core.scoring.model import ModelSpec
from stream.core.scoring.policy import Policy
from stream.core.scoring.sampling import LegitSampling
from stream.core.scoring.warmup import Warmup
from stream.state.keys import StateKey


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything the core needs, as plain values (built from Settings by the CLI)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    # Which legitimate labels the per-partition models learn (scoring/sampling.py).
    sampling: LegitSampling = field(default_factory=LegitSampling)
    policy: Policy = field(default_factory=Policy)
    # The cold start: decisions by fallback rules until a partition has learned enough labels.
    warmup: Warmup = field(default_factory=Warmup)
    horizons_s: tuple[float, ...] = (600.0, 3600.0, 86400.0, 604800.0, 2592000.0)
    card_ttl_s: float = 30 * 86400.0
    merchant_ttl_s: float = 90 * 86400.0
    merchant_prior: tuple[float, float] = (1.0, 99.0)
    # The shared merchant table (features/merchant_table.py): a read lags its transaction by
    # `merchant_delta_s` of event time; input later than `merchant_lateness_s` counts late.
    merchant_delta_s: float = 300.0
    merchant_lateness_s: float = 30.0
    # "shared": one champion learned from every partition's labels through the merchant
    # table, read as of `model_epoch_s` epochs (scoring/timeline.py); "partition": one each.
    model_state: str = "partition"
    model_epoch_s: float = 300.0
    evict_every: int = 10_000
    label_delay_s: float = 0.0
    pending_ttl_s: float = 120 * 86400.0
    pending_max: int = 1_000_000
    # Byte budgets (core/budget.py): beyond one, the store's oldest entries are dropped.
    pending_max_bytes: int = 512 * 2**20
    early_label_max_bytes: int = 32 * 2**20
    card_state_max_bytes: int = 512 * 2**20
    metrics_window: int = 10_000
    explain_top_k: int = 3
    early_label_max: int = 100_000
    early_label_ttl_s: float = 86400.0
    # Duplicates: each partition remembers its decisions on the last `dedupe_max` transaction
    # ids within `dedupe_window_s` of event time; a repeated id gets the same verdict again.
    dedupe_max: int = 50_000
    dedupe_window_s: float = 600.0
    # Corrections: each partition remembers the last `correction_max` labels it learned within
    # `correction_window_s`; a label with the opposite value is learned again (0: off).
    correction_max: int = 20_000
    correction_window_s: float = 30 * 86400.0
    # Record what changed between checkpoints (for the changelog); off when nothing drains it.
    track_changes: bool = False
    # Challengers, promotion, drift, "no chargeback within N days" (all off by default).
    oversight: OversightConfig = field(default_factory=OversightConfig)
    # Signs the model snapshots written for the changelog and authenticates those read back
    # (state/snapshot.py); None: this pipeline neither writes nor restores a changelog.
    state_key: StateKey | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.merchant_lateness_s <= self.merchant_delta_s:
            raise ValueError("need 0 <= merchant_lateness_s <= merchant_delta_s: a read must "
                             "not wait for input that may still be late")
