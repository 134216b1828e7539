"""What the core is built from, given the settings: the one place that reads Settings for the
pure core (which never sees pydantic). The live wiring and the batch commands both use it, so a
trained snapshot and the scorer that starts from it are configured alike.
"""

from __future__ import annotations

import stream
from stream.config import Settings
from stream.contracts.codec import TimeBounds
from stream.core.evaluation.oversight import OversightConfig
from stream.core.evaluation.shadow import PromotionRule
from stream.core.pipeline_config import PipelineConfig
from stream.core.scoring.model import ModelSpec
from stream.core.scoring.policy import Policy
from stream.core.scoring.warmup import Warmup
from stream.core.scoring.zoo import challenger_names
from stream.errors import ConfigError


def model_spec(settings: Settings) -> ModelSpec:
    return ModelSpec(settings.learning_rate, settings.l2, settings.fraud_weight)


def model_version(settings: Settings) -> str:
    """The champion's name and the package version, as verdicts carry it.

    >>> from stream.config import load_settings
    >>> model_version(load_settings(environ={})).startswith("logreg-lr0.005-w5@")
    True
    """
    return f"{model_spec(settings).name}@{stream.__version__}"


def challengers(settings: Settings) -> tuple[str, ...]:
    """The configured challengers in their canonical spelling; a ConfigError names the bad one.

    >>> from stream.config import load_settings
    >>> challengers(load_settings(environ={}, challengers=("Logreg-Adam-lr0.010", "gnb")))
    ('logreg-adam-lr0.01', 'gnb')
    """
    return tuple(challenger_names(settings.challengers, model_spec(settings).name))


def oversight_config(settings: Settings) -> OversightConfig:
    """Challengers, promotion, drift and the unlabelled-as-legitimate rule."""
    metric = settings.promotion_metric
    rule = None if metric is None else PromotionRule(
        metric, settings.promotion_margin, settings.promotion_min_labels)
    days = settings.unlabelled_as_legit_days
    return OversightConfig(
        challengers=challengers(settings),
        promotion=rule,
        drift_delta=settings.drift_delta,
        drift_min_labels=settings.drift_min_labels,
        drift_log_interval_s=settings.drift_log_interval_s,
        psi_reference=settings.psi_reference,
        psi_window=settings.psi_window,
        psi_threshold=settings.psi_threshold,
        psi_warmup=settings.psi_warmup,
        unlabelled_as_legit_s=None if days is None else days * 86400.0,
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The core's view of the settings: plain values only."""
    try:
        return PipelineConfig(
            model=model_spec(settings),
            policy=Policy(settings.review_threshold, settings.decline_threshold),
            warmup=Warmup(settings.warmup_labels, settings.warmup_review_amount,
                          settings.warmup_decline_amount),
            horizons_s=settings.horizons_s,
            card_ttl_s=settings.card_ttl_s,
            merchant_ttl_s=settings.merchant_ttl_s,
            merchant_prior=settings.merchant_prior,
            merchant_delta_s=settings.merchant_delta_s,
            merchant_lateness_s=settings.merchant_lateness_s,
            evict_every=settings.evict_every,
            label_delay_s=settings.label_delay_s,
            pending_ttl_s=settings.pending_ttl_s,
            pending_max=settings.pending_max,
            dedupe_max=settings.dedupe_max,
            dedupe_window_s=settings.dedupe_window_s,
            correction_max=settings.correction_max,
            correction_window_s=settings.correction_window_s,
            metrics_window=settings.metrics_window,
            track_changes=settings.changelog,
            oversight=oversight_config(settings),
        )
    except ValueError as exc:  # a core object refused the value: the setting is wrong
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid settings: {exc}") from None


def time_bounds(settings: Settings) -> TimeBounds:
    """Where an event time may lie (the live intake and the batch sources check alike).

    >>> from stream.config import load_settings
    >>> time_bounds(load_settings(environ={}, max_timestamp_ahead_s=3600.0))
    TimeBounds(ahead_s=3600.0, behind_s=315360000.0)
    """
    return TimeBounds(settings.max_timestamp_ahead_s, settings.max_timestamp_behind_s)
