"""feature layer: per-card / per-merchant windowed state, a store with eviction, the extractor.

Pure Python, no I/O. State is read before it is updated, and event time comes only from the
transaction's own timestamp.
"""

from __future__ import annotations

from stream.core.features.extractor import FeatureExtractor, horizon_label
from stream.core.features.store import StateStore
from stream.core.features.timeofday import calendar_features
from stream.core.features.windows import DecayedWindow, RunningMoments

__all__ = [
    "DecayedWindow",
    "FeatureExtractor",
    "RunningMoments",
    "StateStore",
    "calendar_features",
    "horizon_label",
]
