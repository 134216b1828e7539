"""Configuration, read once: defaults < TOML file < environment < command-line flags.

The result is a frozen `Settings`; layers below the CLI receive plain values from it and
never read the environment themselves, so a test can build any configuration in one line.
Environment variables use the prefix `FRAUDSTREAM_` (e.g. `FRAUDSTREAM_REVIEW_THRESHOLD`),
except the bootstrap address, which also honours the usual `KAFKA_BOOTSTRAP_SERVERS`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from stream.errors import ConfigError

# The environment to read, when a caller (a test) supplies one instead of os.environ.
# A ContextVar keeps this thread-safe, unlike swapping os.environ.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("fraudstream_environ", default=None)


class _EnvSource(EnvSettingsSource):
    """The usual environment source, reading the supplied mapping when there is one."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        supplied = _ENVIRON.get()
        if supplied is None:
            return super()._load_env_vars()
        return {k.lower(): v for k, v in supplied.items()}

Guarantee = Literal["at-least-once", "exactly-once"]



class Settings(BaseSettings):
    """Every tunable of the scorer, producer and demo, with production-sane defaults."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUDSTREAM_", frozen=True, extra="forbid", populate_by_name=True
    )

    # Kafka connection; the SASL password is a SecretStr so it never shows in logs or repr.
    bootstrap_servers: str = Field(
        "localhost:9092",
        validation_alias=AliasChoices(
            "bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS", "FRAUDSTREAM_BOOTSTRAP_SERVERS"
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "fraud-stream"
    # Which Kafka client every component uses: librdkafka (confluent-kafka, the default, for
    # speed) or kafka-python (pure Python). See README "Kafka clients".
    kafka_client: Literal["librdkafka", "kafka-python"] = "librdkafka"
    request_timeout_ms: int = Field(30_000, gt=0)
    bootstrap_timeout_ms: int = Field(10_000, gt=0)

    # Topics and group.
    input_topic: str = "transactions"
    output_topic: str = "verdicts"
    labels_topic: str = "labels"
    dlq_topic: str = "transactions.dlq"
    changelog_topic: str = "transactions.changelog"
    group_id: str = "fraud-stream"
    topics_dir: Path | None = None

    # The loop, checkpoints and delivery.
    guarantee: Guarantee = "exactly-once"
    transactional_id: str | None = None
    changelog: bool = True
    checkpoint_events: int = Field(10_000, gt=0)
    checkpoint_interval_ms: float = Field(100.0, ge=0)
    max_outage_s: float = Field(300.0, gt=0)
    shutdown_timeout_s: float = Field(30.0, gt=0)
    max_events: int | None = Field(None, ge=0)
    max_poll_records: int = Field(500, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    poll_timeout_ms: int = Field(100, ge=0)
    # Event-time alignment of transactions and labels (Kafka Streams' max.task.idle.ms and
    # buffered.records.per.partition): how long to wait for a partition that may still hold
    # earlier records, and how many records one partition may hold before it is paused.
    max_task_idle_ms: float = Field(2000.0, ge=0)
    buffered_records_per_partition: int = Field(20_000, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Loopback unless told otherwise: /metrics tells anyone who can reach it the topics, the
    # traffic and the model's quality. Containers set 0.0.0.0 (deploy/Dockerfile, the k8s
    # ConfigMap), where the network namespace and the Service decide who reaches it.
    metrics_host: str = "127.0.0.1"
    idle_exit_s: float | None = Field(None, gt=0)
    stuck_after_s: float = Field(60.0, gt=0)

    # Features.
    horizons_s: tuple[float, ...] = (3600.0, 86400.0, 604800.0, 2592000.0)
    card_ttl_s: float = Field(30 * 86400.0, gt=0)
    merchant_ttl_s: float = Field(90 * 86400.0, gt=0)
    merchant_prior: tuple[float, float] = (1.0, 99.0)
    evict_every: int = Field(10_000, gt=0)

    # Model and policy.
    learning_rate: float = Field(0.02, gt=0)
    l2: float = Field(0.0, ge=0)
    fraud_weight: float = Field(5.0, gt=0)
    review_threshold: float = Field(0.2, ge=0, le=1)
    decline_threshold: float = Field(0.6, ge=0, le=1)
    label_delay_s: float = Field(0.0, ge=0)
    pending_ttl_s: float = Field(120 * 86400.0, gt=0)
    pending_max: int = Field(1_000_000, gt=0)

    # Evaluation.
    metrics_window: int = Field(10_000, gt=10)

    # A trained snapshot (`stream train` / `stream replay --out`) that every newly assigned
    # partition starts from, unless the changelog already holds that partition's state.
    init_from: Path | None = None

    # Champion and challengers (shadow models, see stream/core/scoring/zoo.py for the
    # names); promotion is off unless a metric is set. All off by default: no extra cost.
    challengers: tuple[str, ...] = ()
    promotion_metric: Literal["roc_auc", "pr_auc", "log_loss"] | None = None
    promotion_margin: float = Field(0.02, ge=0)
    promotion_min_labels: int = Field(5000, ge=1)

    # Drift: ADWIN on the champion's loss; PSI of its scores against a reference window.
    drift_delta: float = Field(0.002, gt=0, lt=1)
    psi_reference: int = Field(5000, gt=0)
    psi_window: int = Field(5000, gt=0)
    psi_threshold: float = Field(0.25, gt=0)
    psi_warmup: int = Field(2000, ge=0)

    # "No chargeback within N days": learn unlabelled decisions as legitimate (off: None).
    unlabelled_as_legit_days: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.review_threshold > self.decline_threshold:
            raise ValueError("review_threshold must not exceed decline_threshold")
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        """A SASL protocol needs a mechanism (the clients would each guess another one), and
        PLAIN or SCRAM need a user name and a password."""
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism "
                             "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        mechanism = (self.sasl_mechanism or "").upper()
        if self.security_protocol.startswith("SASL") and (
                mechanism == "PLAIN" or mechanism.startswith("SCRAM")) and (
                not self.sasl_plain_username or self.sasl_plain_password is None):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_plain_username "
                             "and sasl_plain_password (FRAUDSTREAM_SASL_PLAIN_PASSWORD)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat the environment; the TOML file is merged in by load_settings
        # below the environment, which is why it is not a source here.
        return (init_settings, _EnvSource(settings_cls))

    def topic_names(self) -> dict[str, str]:
        """The one map from topic role (topics/<role>.toml) to the configured topic name."""
        return {"transactions": self.input_topic, "labels": self.labels_topic,
                "verdicts": self.output_topic, "transactions.dlq": self.dlq_topic,
                "transactions.changelog": self.changelog_topic}


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    """TOML sections ([kafka], [model], ...) are for humans; settings are one flat namespace."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key.replace("-", "_")] = value
    return flat


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file, with a one-line error for a missing or broken file."""
    try:
        with path.open("rb") as handle:
            return _flatten(tomllib.load(handle))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_names(settings_cls: type[Settings]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for name, info in settings_cls.model_fields.items():
        aliases = {f"FRAUDSTREAM_{name.upper()}"}
        if isinstance(info.validation_alias, AliasChoices):
            aliases |= {a for a in info.validation_alias.choices if isinstance(a, str)}
        names[name] = aliases
    return names


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None, **flags: Any
) -> Settings:
    """Merge the four layers; flags that are None (not given) do not override anything."""
    env = os.environ if environ is None else environ
    file_values = read_toml(config_file) if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}
    # TOML values apply only where neither the environment nor a flag sets the field.
    upper_env = {k.upper() for k in env}
    for name, aliases in _env_names(Settings).items():
        if name in file_values and name not in given and not aliases & upper_env:
            given[name] = file_values.pop(name)
    unknown = set(file_values) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_file}: {', '.join(sorted(unknown))}")
    token = _ENVIRON.set(environ)
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    finally:
        _ENVIRON.reset(token)
