"""What the core is built from, given the settings: the one place that reads Settings for the
pure core (which never sees pydantic). The live wiring and the batch commands both use it, so a
trained snapshot and the scorer that starts from it are configured alike.
"""

from __future__ import annotations

import logging

import stream
from stream.config import Settings
from stream.contracts.codec import TimeBounds
from stream.core.evaluation.oversight import OversightConfig
from stream.core.evaluation.shadow import PromotionRule
from stream.core.features.extractor import FeatureExtractor
from stream.core.pipeline_config import PipelineConfig
from stream.core.scoring.model import DEFAULT_CROSSES, ModelSpec
from stream.core.scoring.policy import Policy
from stream.core.scoring.sampling import LegitSampling
from stream.core.scoring.warmup import Warmup
from stream.core.scoring.zoo import challenger_names
from stream.errors import ConfigError
from stream.kafka.redact import protect, reveal
from stream.state.keys import StateKey, dev_key, read_key_file

log = logging.getLogger("stream.assembly")


def model_spec(settings: Settings) -> ModelSpec:
    return ModelSpec(settings.learning_rate, settings.l2, settings.fraud_weight,
                     settings.average_days, crosses=feature_crosses(settings))


def feature_crosses(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The champion's feature crosses: the configured pairs, each checked against the feature
    names of the configured horizons (a typo is a ConfigError, not a cross that never forms),
    or, unset, the built-in pairs those features can form.

    >>> from stream.config import load_settings
    >>> feature_crosses(load_settings(environ={}, feature_crosses=["amount_log*is_night"]))
    (('amount_log', 'is_night'),)
    >>> len(feature_crosses(load_settings(environ={}))), feature_crosses(
    ...     load_settings(environ={}, feature_crosses=[]))
    (20, ())
    """
    names = FeatureExtractor(horizons_s=settings.horizons_s).feature_names
    if settings.feature_crosses is None:
        present = set(names)
        return tuple(pair for pair in DEFAULT_CROSSES if present.issuperset(pair))
    crosses: list[tuple[str, str]] = []
    for text in settings.feature_crosses:
        a, star, b = text.strip().partition("*")
        unknown = [n for n in (a.strip(), b.strip()) if n not in names]
        if not star or "*" in b or unknown:
            raise ConfigError(
                f"feature_crosses: {text!r} is not two feature names joined by '*'"
                + (f" ({', '.join(map(repr, unknown))} unknown)" if star and unknown else "")
                + f"; the features are: {', '.join(names)}")
        pair = (a.strip(), b.strip())
        if pair not in crosses:
            crosses.append(pair)
    return tuple(crosses)


def model_version(settings: Settings) -> str:
    """The champion's name and the package version, as verdicts carry it.

    >>> from stream.config import load_settings
    >>> model_version(load_settings(environ={})).startswith("logreg-lr0.005-w5-avg3@")
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


def state_key(settings: Settings) -> StateKey:
    """The key that signs and authenticates snapshots: `state_key`, else `state_key_file`,
    else, on a PLAINTEXT cluster only, the development key (made once per user, 0600, with a
    WARNING: a local broker nobody else writes to). A cluster that authenticates its clients
    (SSL, SASL) is a deployment: there a missing key is a ConfigError, never a made-up key.
    The key is registered with the log redaction (stream/kafka/redact.py) before use.

    >>> from stream.config import load_settings
    >>> state_key(load_settings(environ={"FRAUDSTREAM_STATE_KEY": "k" * 40})).source
    'state_key'
    >>> state_key(load_settings(environ={}, security_protocol="SSL"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    stream.errors.ConfigError: no state key configured: ...
    """
    previous = _previous_key(settings)
    if settings.state_key is not None:
        return StateKey.from_text(reveal(settings.state_key), "state_key", previous)
    if settings.state_key_file is not None:
        text = read_key_file(settings.state_key_file).strip()
        protect(text)
        return StateKey.from_text(text, f"state_key_file {settings.state_key_file}", previous)
    if settings.security_protocol != "PLAINTEXT":
        raise ConfigError(
            f"no state key configured: with security_protocol {settings.security_protocol} "
            "snapshots must be signed with a key of your own, shared by every instance of "
            "the application: set state_key_file (--state-key-file) or FRAUDSTREAM_STATE_KEY "
            "(e.g. from `openssl rand -hex 32`)")
    path = settings.dev_state_key_file.expanduser()
    text = dev_key(path)
    protect(text)
    key = StateKey.from_text(text, f"development key {path}")
    log.warning("no state key configured: snapshots are signed with the development key %s "
                "(key id %s), readable by this user only; a deployment sets state_key_file or "
                "FRAUDSTREAM_STATE_KEY, the same for every instance", path, key.key_id)
    return key


def _previous_key(settings: Settings) -> tuple[StateKey, ...]:
    """The key being retired (key rotation, state/keys.py), if one is configured."""
    if settings.previous_state_key is not None:
        text = reveal(settings.previous_state_key)
        source = "previous_state_key"
    elif settings.previous_state_key_file is not None:
        text = read_key_file(settings.previous_state_key_file).strip()
        protect(text)
        source = f"previous_state_key_file {settings.previous_state_key_file}"
    else:
        return ()
    if settings.state_key is None and settings.state_key_file is None:
        raise ConfigError("a previous state key is set without a current one: rotation needs "
                          "the new key in state_key_file or FRAUDSTREAM_STATE_KEY")
    return (StateKey.from_text(text, source),)


def pipeline_config(settings: Settings, key: StateKey | None = None) -> PipelineConfig:
    """The core's view of the settings: plain values only (and the state key, when the
    pipeline writes or restores a changelog)."""
    try:
        return PipelineConfig(
            model=model_spec(settings),
            sampling=LegitSampling(settings.legit_sample_score, settings.legit_sample_floor),
            policy=Policy(settings.review_threshold, settings.decline_threshold),
            warmup=Warmup(settings.warmup_labels, settings.warmup_review_amount,
                          settings.warmup_decline_amount),
            horizons_s=settings.horizons_s,
            card_ttl_s=settings.card_ttl_s,
            merchant_ttl_s=settings.merchant_ttl_s,
            merchant_prior=settings.merchant_prior,
            merchant_delta_s=settings.merchant_delta_s,
            merchant_lateness_s=settings.merchant_lateness_s,
            model_state=settings.model_state,
            model_epoch_s=settings.model_epoch_s,
            evict_every=settings.evict_every,
            label_delay_s=settings.label_delay_s,
            pending_ttl_s=settings.pending_ttl_s,
            pending_max=settings.pending_max,
            pending_max_bytes=settings.pending_max_bytes,
            early_label_max=settings.early_label_max,
            early_label_max_bytes=settings.early_label_max_bytes,
            card_state_max_bytes=settings.card_state_max_bytes,
            dedupe_max=settings.dedupe_max,
            dedupe_window_s=settings.dedupe_window_s,
            correction_max=settings.correction_max,
            correction_window_s=settings.correction_window_s,
            metrics_window=settings.metrics_window,
            track_changes=settings.changelog,
            oversight=oversight_config(settings),
            state_key=key,
        )
    except ValueError as exc:  # a core object refused the value: the setting is wrong
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid settings: {exc}") from None


def merchant_partitions(settings: Settings, partitions: int) -> int | None:
    """The `Pipeline`'s merchant table size for a run over `partitions` input partitions:
    all of them with the shared table (`merchant_state = "shared"`, the default), None (a
    merchant state per partition) otherwise. A file or a single-model replay is one stream,
    partition 0: pass 1.

    >>> from stream.config import load_settings
    >>> merchant_partitions(load_settings(environ={}), 4)
    4
    >>> merchant_partitions(load_settings(environ={}, merchant_state="partition",
    ...                                   model_state="partition"), 4) is None
    True
    """
    return partitions if settings.merchant_state == "shared" else None


def time_bounds(settings: Settings) -> TimeBounds:
    """Where an event time may lie (the live intake and the batch sources check alike).

    >>> from stream.config import load_settings
    >>> time_bounds(load_settings(environ={}, max_timestamp_ahead_s=3600.0))
    TimeBounds(ahead_s=3600.0, behind_s=315360000.0)
    """
    return TimeBounds(settings.max_timestamp_ahead_s, settings.max_timestamp_behind_s)
