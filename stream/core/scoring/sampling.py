"""Which legitimate labels the model learns from, and with what weight (off by default).

The model's step on a label is about 40% of the core's time per event, and almost all of it
goes to legitimate labels (about 99% of them), most of which the model already scores near
zero. With ``score_at > 0`` (the setting ``legit_sample_score``; ``floor`` is
``legit_sample_floor``) a legitimate label is learned with probability
``q = clamp(score / score_at, floor, 1)`` and importance weight ``1 / q``; fraud
labels always. The log-loss gradient of a legitimate example is its score, so ``q`` follows
the size of the step it would make (the variance-optimal choice for a fixed budget), the
expected update is the full one, and a kept example's weighted gradient is at most
``score_at``. It makes the core about 1.5x faster but costs average precision
(README "Learning from labels" has the measurements), so it is an operator's choice.

Tried and not kept: the scaler updating its statistics on one label in eight. On the
quality benchmark's stream it changed nothing (AUC 0.8750 against 0.8757), but on a short
stream at four partitions AUC fell from 0.81 to 0.70: a partition's rare features (a card's
recent fraud count) had too few non-zero values in the sample for a usable variance.

The draw is a hash of the transaction id, not a random generator: a replay, a restore from
the changelog and a run on 1, 4 or 16 partitions make exactly the same choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from zlib import crc32

_UNIT = 1.0 / 2**32


@dataclass(frozen=True, slots=True)
class LegitSampling:
    """Keep a legitimate label with probability ``clamp(score / score_at, floor, 1)``;
    ``score_at = 0`` learns every label.

    >>> sampling = LegitSampling(score_at=0.2, floor=0.1)
    >>> sampling.weight("tx-1", is_fraud=True, score=0.0)  # fraud: always, weight 1
    1.0
    >>> sampling.weight("tx-1", is_fraud=False, score=0.5)  # at or above score_at: always
    1.0
    >>> [round(sampling.weight(f"tx-{i}", False, 0.01), 1) for i in range(8)]
    [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 10.0]
    """

    score_at: float = 0.0
    floor: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_at <= 1.0:
            raise ValueError(f"score_at must be in [0, 1], got {self.score_at}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {self.floor}")

    @property
    def enabled(self) -> bool:
        return self.score_at > 0.0

    def weight(self, transaction_id: str, is_fraud: bool, score: float) -> float:
        """The label's importance weight; 0.0: the label is not learned."""
        if is_fraud or score >= self.score_at:
            return 1.0
        keep = score / self.score_at
        if keep < self.floor:
            keep = self.floor
        if crc32(transaction_id.encode()) * _UNIT >= keep:
            return 0.0
        return 1.0 / keep
