"""Configuration, read once: defaults < TOML file < environment < command-line flags.

The result is a frozen `Settings`; layers below the CLI receive plain values from it and
never read the environment themselves, so a test can build any configuration in one line.
Environment variables use the prefix `FRAUDSTREAM_` (e.g. `FRAUDSTREAM_REVIEW_THRESHOLD`),
except the bootstrap address, which also honours the usual `KAFKA_BOOTSTRAP_SERVERS`.
"""

from __future__ import annotations

import os
import re
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

# What an application id may hold: Kafka's legal topic characters, short enough that every
# internal topic name stays under Kafka's 249 characters.
_APPLICATION_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
CHANGELOG = "changelog"
"""The state changelog's internal-topic name: `<application_id>.changelog`."""
MERCHANT_FEED = "merchant-feed"
"""The merchant feed's internal-topic name: `<application_id>.merchant-feed`."""
MERCHANT_IMAGES = "merchant-images"
"""The merchant table images' internal-topic name: `<application_id>.merchant-images`."""
EXACTLY_ONCE_IDLE_MS = 20.0
"""`idle_checkpoint_ms` under exactly-once when `checkpoint_idle_ms` is not set."""
GROUP_FETCH = {"librdkafka": (32_768, 2), "kafka-python": (1, 100)}
"""`group_fetch` by client, (min bytes, max wait ms), where the settings leave it."""
READER_FETCH_WAIT_MS = 20
"""The group-less readers' fetch wait (restores, the merchant feed): the end of a partition
shows only in a fetch response, so they do not wait long for one."""
KAFKA_PYTHON_IDLE_MS = 540_000
"""kafka-python's `connections_max_idle_ms`: its request timeout must stay below it."""


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
    # "" (the default): this application's own, `<application_id>.changelog`. Pointing two
    # applications at one changelog is refused on restore unless `adopt_state_from` says so.
    changelog_topic: str = ""
    group_id: str = "fraud-stream"
    # The application (Kafka Streams' application.id): its internal topics are named after it
    # (`internal_topic`) and every changelog record it writes carries it, so two deployments
    # never restore each other's state. "" (the default): the group id.
    application_id: str = ""
    # Take over the state another application wrote to this changelog (blue/green), once: the
    # takeover is recorded in the changelog, later starts need not repeat it.
    adopt_state_from: str | None = None
    topics_dir: Path | None = None

    # The loop, checkpoints and delivery.
    guarantee: Guarantee = "exactly-once"
    transactional_id: str | None = None
    changelog: bool = True
    checkpoint_events: int = Field(10_000, gt=0)
    checkpoint_interval_ms: float = Field(100.0, ge=0)
    # A scorer that has caught up (its poll finds nothing fetched) checkpoints this soon after
    # the last one instead of after `checkpoint_interval_ms` (serving/checkpoint.py). None:
    # 20 ms under exactly-once, whose verdicts become visible at a checkpoint's commit; the
    # interval under at-least-once, whose verdicts are out as they are made (`idle_checkpoint_ms`).
    checkpoint_idle_ms: float | None = Field(None, ge=0)
    max_outage_s: float = Field(300.0, gt=0)
    shutdown_timeout_s: float = Field(30.0, gt=0)
    max_events: int | None = Field(None, ge=0)
    max_poll_records: int = Field(500, gt=0)
    # `stream run` freezes the heap's survivors every 0.1 s (serving/gc_policy.py): only a
    # full collection reclaims a reference cycle among them, this often (0: never).
    heap_full_collect_s: float = Field(3600.0, ge=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    poll_timeout_ms: int = Field(100, ge=0)
    # How the scorer's group consumer fetches (Kafka's fetch.min.bytes and
    # fetch.max.wait.ms): the broker answers a fetch once it holds `fetch_min_bytes` for it or
    # after `fetch_max_wait_ms`. None: the client's default (`group_fetch`).
    fetch_min_bytes: int | None = Field(None, ge=1)
    fetch_max_wait_ms: int | None = Field(None, ge=0, le=60_000)
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

    # Event time is bounded (README "Event time"): a record whose `timestamp` is more than
    # `max_timestamp_ahead_s` after its Kafka record timestamp (or the wall clock, whichever
    # is earlier), or more than `max_timestamp_behind_s` before its Kafka record timestamp,
    # is dead-lettered as `timestamp_out_of_range`, and so is epoch seconds sent as epoch ms.
    # The past bound is relative to the record timestamp, never the wall clock, so a backlog
    # or a replay of old records keeps its old event times; files have no record timestamp
    # and no past bound.
    max_timestamp_ahead_s: float = Field(7 * 86400.0, gt=0)
    max_timestamp_behind_s: float = Field(3650 * 86400.0, gt=0)

    # Poison records (README "Poison records and size limits"). A string field longer than
    # `max_field_length` characters (transaction_id, card_id, merchant_id, currency) is
    # dead-lettered as `field_too_long`: ids are held in memory and copied into verdicts and
    # changelog keys. `max_message_bytes` is the largest record the scorer produces (key,
    # value and headers), also given to the producers (librdkafka `message.max.bytes`,
    # kafka-python `max_request_size`); keep it at or below the topics' `max.message.bytes`.
    # A verdict that would be larger dead-letters its input as `output_too_large`. A dead
    # letter keeps at most `dead_letter_payload_bytes` of the original value (and of its key
    # and headers), with the original size and SHA-256, so it always fits.
    max_field_length: int = Field(256, ge=1, le=100_000)
    max_message_bytes: int = Field(1_000_000, ge=100_000, le=100_000_000)
    dead_letter_payload_bytes: int = Field(65_536, ge=1024)

    # Features.
    horizons_s: tuple[float, ...] = (600.0, 3600.0, 86400.0, 604800.0, 2592000.0)
    card_ttl_s: float = Field(30 * 86400.0, gt=0)
    merchant_ttl_s: float = Field(90 * 86400.0, gt=0)
    merchant_prior: tuple[float, float] = (1.0, 99.0)
    # The shared merchant table: reads lag the transaction by merchant_delta_s of event time;
    # input later than merchant_lateness_s (<= delta) counts as arriving at the limit.
    # Instances catching up together move delta - lateness of event time per exchange of
    # feed records; the table keeps a state copy for every event within delta of the reads.
    merchant_delta_s: float = Field(300.0, ge=0)
    merchant_lateness_s: float = Field(30.0, ge=0)
    # "shared": one merchant table over every partition's traffic, shared between instances
    # through the merchant feed and rebuilt from its images; "partition": each partition
    # sees its own traffic only, which detects less the more partitions there are (README).
    merchant_state: Literal["shared", "partition"] = "shared"
    # "shared": one champion learned from every partition's labels, through the merchant
    # table (needs merchant_state "shared"; no promotion), read as of epochs of
    # model_epoch_s of event time; "partition": each partition learns its own (README).
    model_state: Literal["shared", "partition"] = "shared"
    model_epoch_s: float = Field(300.0, gt=0)
    # How long the scorer holds input back for the other instances' merchant events before
    # it reads the merchant state as it is (counted as stale reads).
    merchant_max_wait_ms: float = Field(2000.0, ge=0)
    # Every this many seconds (wall clock), the instance that owns input partition 0 writes
    # an image of the shared merchant table (and champion) to the merchant-images topic, in
    # a checkpoint; a rebuild loads the latest and folds only the merchant feed after it. 0:
    # none written (a rebuild folds the whole feed).
    merchant_image_interval_s: float = Field(600.0, ge=0)
    # Every this many events of a partition: pending decisions, early labels and (with
    # `unlabelled_as_legit_days`) unlabelled decisions past their time. Idle keys, the
    # merchant table's old copies and the id memories go as the clock moves instead.
    evict_every: int = Field(10_000, gt=0)

    # Model and policy.
    learning_rate: float = Field(0.005, gt=0)
    l2: float = Field(0.0, ge=0)
    fraud_weight: float = Field(5.0, gt=0)
    # The champion scores with an exponential average of its weights over this many days of
    # label time (README "Learning from labels"); 0: with the raw weights.
    average_days: float = Field(3.0, ge=0, le=365)
    # Pairs of features whose product the champion (and every challenger) also learns from,
    # each "a*b" (README "Learning from labels"); unset: the built-in pairs
    # (scoring/model.py DEFAULT_CROSSES) that the configured horizons can form; []: none.
    feature_crosses: tuple[str, ...] | None = None
    # Legitimate labels scored below legit_sample_score are learned with probability
    # score / legit_sample_score (at least legit_sample_floor) and weight 1 / probability
    # (README "Learning from labels"); 0: every label is learned (the default).
    legit_sample_score: float = Field(0.0, ge=0, le=1)
    legit_sample_floor: float = Field(0.1, gt=0, le=1)
    review_threshold: float = Field(0.2, ge=0, le=1)
    decline_threshold: float = Field(0.6, ge=0, le=1)
    # The cold start (README "Cold start"): until a partition's model has learned from
    # `warmup_labels` labels, decisions follow these amount rules (none set: approve), not the
    # score. A partition restored from the changelog or a snapshot keeps its label count.
    warmup_labels: int = Field(500, ge=0)
    warmup_review_amount: float | None = Field(None, ge=0)
    warmup_decline_amount: float | None = Field(None, ge=0)
    label_delay_s: float = Field(0.0, ge=0)
    pending_ttl_s: float = Field(120 * 86400.0, gt=0)
    pending_max: int = Field(1_000_000, gt=0)
    # Byte budgets (README "Memory budgets"), estimated from the id lengths and a fixed cost
    # per entry: beyond one, the oldest entries of that store are dropped and counted.
    # `pending_max_bytes`: decision-time records awaiting labels; `early_label_max_bytes`:
    # labels that arrived before their transaction (at most `early_label_max` of them);
    # `card_state_max_bytes`: per-card feature rows, over every assigned partition.
    pending_max_bytes: int = Field(512 * 2**20, ge=2**20)
    early_label_max: int = Field(100_000, gt=0)
    early_label_max_bytes: int = Field(32 * 2**20, ge=2**16)
    card_state_max_bytes: int = Field(512 * 2**20, ge=2**20)
    # Duplicates and corrections (README "Duplicates and corrections"), per partition; a max
    # or a window of 0 turns one off.
    dedupe_max: int = Field(50_000, ge=0)
    dedupe_window_s: float = Field(600.0, ge=0)
    correction_max: int = Field(20_000, ge=0)
    correction_window_s: float = Field(30 * 86400.0, ge=0)

    # Evaluation.
    metrics_window: int = Field(10_000, gt=10)

    # A trained snapshot (`stream train` / `stream replay --out`) that every newly assigned
    # partition starts from, unless the changelog already holds that partition's state.
    init_from: Path | None = None
    # The key that signs every snapshot (changelog and files) and authenticates it before it
    # is unpickled (README "Security"): the key itself (a secret, like the SASL password:
    # prefer FRAUDSTREAM_STATE_KEY to a file in git), or a file holding it (a mounted
    # Secret). Neither, on a PLAINTEXT cluster: a development key made once per user at
    # `dev_state_key_file`, with a WARNING; neither, on SSL or SASL: a ConfigError.
    state_key: SecretStr | None = None
    state_key_file: Path | None = None
    # Rotation (README "Rotating the state key"): the key being retired, which still
    # authenticates what it signed but signs nothing (FRAUDSTREAM_PREVIOUS_STATE_KEY or a file).
    previous_state_key: SecretStr | None = None
    previous_state_key_file: Path | None = None
    dev_state_key_file: Path = Path("~/.local/state/fraud-stream/dev-state.key")

    # Champion and challengers (shadow models, see stream/core/scoring/zoo.py for the
    # names); promotion is off unless a metric is set. All off by default: no extra cost.
    challengers: tuple[str, ...] = ()
    promotion_metric: Literal["roc_auc", "pr_auc", "log_loss"] | None = None
    promotion_margin: float = Field(0.02, ge=0)
    promotion_min_labels: int = Field(5000, ge=1)

    # Drift (stream/core/evaluation/drift.py): ADWIN (confidence drift_delta) on the log loss
    # of fraud labels, tested from drift_min_labels of them on; PSI of the last psi_window
    # scores against the psi_reference before them. A drift is logged at most once per kind
    # and partition per drift_log_interval_s of event time.
    drift_delta: float = Field(1e-4, gt=0, lt=1)
    drift_min_labels: int = Field(30, ge=1)
    drift_log_interval_s: float = Field(3600.0, ge=0)
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
    def _dead_letters_fit(self) -> Settings:
        # A dead letter holds at most this much of the payload, of the key and of the headers
        # each, plus a bounded error message: it must fit in max_message_bytes.
        if 4 * self.dead_letter_payload_bytes + 16_384 > self.max_message_bytes:
            raise ValueError("dead_letter_payload_bytes must be at most (max_message_bytes - "
                             "16384) / 4, so that every dead letter fits max_message_bytes")
        return self

    @model_validator(mode="after")
    def _warmup_amounts_ordered(self) -> Settings:
        review, decline = self.warmup_review_amount, self.warmup_decline_amount
        if review is not None and decline is not None and review > decline:
            raise ValueError("warmup_review_amount must not exceed warmup_decline_amount")
        return self

    @model_validator(mode="after")
    def _name_internal_topics(self) -> Settings:
        # Derived once, when the settings are read (they are frozen afterwards): the
        # application id from the group id, the changelog's name from the application id.
        application = self.application_id or self.group_id
        if not _APPLICATION_ID.fullmatch(application):
            given = "application_id" if self.application_id else "group_id (the default " \
                "application_id)"
            raise ValueError(
                f"{given} {application!r} cannot name internal topics: use at most 200 "
                "letters, digits, '.', '_' or '-' (set application_id)")
        if self.adopt_state_from is not None and self.adopt_state_from == application:
            raise ValueError(f"adopt_state_from names this application itself ({application!r})")
        object.__setattr__(self, "application_id", application)
        if not self.changelog_topic:
            object.__setattr__(self, "changelog_topic", self.internal_topic(CHANGELOG))
        return self

    @property
    def group_fetch(self) -> tuple[int, int]:
        """The group consumer's (fetch min bytes, fetch max wait ms): the settings', else
        32 KiB or 2 ms on librdkafka, and 1 byte or 100 ms on kafka-python.

        Why batch on librdkafka: with one byte, every batch a producer sends came back as a
        fetch of its own, and at 2,000 events/s on the 2-core machine those fetches cost
        the broker 0.06-0.14 of a core more and queued the verdicts (six alternating pairs:
        p99 median 167 ms against 46 with 5 ms, README "Benchmark"). Why 2 ms and not 5:
        below 32 KiB a fetch is a timer, and a transaction released in event-time order
        waits for the fetch after the one that brought it (it proves the other partitions'
        ends), so each millisecond of wait is paid about twice. At 2,000 events/s, four
        alternated rounds: p50 8-9 ms against 12-14, p99 16-30 against 21-59, for 0.02 of a
        core more in the scorer and 0.04 in the broker (0.01 and 0.03 when idle). Why not on
        kafka-python: each fetch response is parsed in Python in the scorer's process, and
        an idle scorer fetching every 5 ms used 0.25-0.30 of a core against 0.06.

        >>> load_settings(environ={}).group_fetch
        (32768, 2)
        >>> load_settings(environ={}, kafka_client="kafka-python").group_fetch
        (1, 100)
        >>> load_settings(environ={}, fetch_max_wait_ms=20).group_fetch
        (32768, 20)
        """
        min_bytes, max_wait_ms = GROUP_FETCH[self.kafka_client]
        return (min_bytes if self.fetch_min_bytes is None else self.fetch_min_bytes,
                max_wait_ms if self.fetch_max_wait_ms is None else self.fetch_max_wait_ms)

    @property
    def idle_checkpoint_ms(self) -> float:
        """How soon a caught-up scorer checkpoints: `checkpoint_idle_ms`, else 20 ms under
        exactly-once and `checkpoint_interval_ms` under at-least-once.

        Why not 20 ms for both: an at-least-once verdict is sent as it is made, so its
        checkpoint only commits offsets and state, and at 2,000 events/s on the 2-core
        machine the scorer that checkpointed every 20 ms used 3-16% more CPU, with a p99
        of 89-145 ms against 19-63 at the interval (README "Benchmark").

        >>> load_settings(environ={}, guarantee="at-least-once").idle_checkpoint_ms
        100.0
        >>> load_settings(environ={}).idle_checkpoint_ms  # exactly-once
        20.0
        >>> load_settings(environ={}, guarantee="at-least-once",
        ...               checkpoint_idle_ms=5.0).idle_checkpoint_ms
        5.0
        """
        if self.checkpoint_idle_ms is not None:
            return min(self.checkpoint_idle_ms, self.checkpoint_interval_ms)
        if self.guarantee == "exactly-once":
            return min(EXACTLY_ONCE_IDLE_MS, self.checkpoint_interval_ms)
        return self.checkpoint_interval_ms

    @property
    def transaction_timeout_ms(self) -> int:
        """The exactly-once producers' `transaction.timeout.ms`: how long a crashed
        instance's open transaction can hide later records from read_committed readers,
        until the broker aborts it (it checks every 10 s by default), and so how long a
        restore waits for one (stream/kafka/restore.py)."""
        return max(60_000, self.request_timeout_ms * 2)

    @property
    def merchant_feed_topic(self) -> str:
        """The merchant feed (shared merchant state): `<application_id>.merchant-feed`."""
        return self.internal_topic(MERCHANT_FEED)

    @property
    def merchant_images_topic(self) -> str:
        """Images of the shared merchant table: `<application_id>.merchant-images`."""
        return self.internal_topic(MERCHANT_IMAGES)

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

    @model_validator(mode="after")
    def _shared_model(self) -> Settings:
        if self.model_state == "shared" and self.merchant_state != "shared":
            raise ValueError("model_state 'shared' (the default) learns through the shared "
                             "merchant table: with merchant_state = 'partition' set "
                             "model_state = 'partition' too")
        if self.model_state == "shared" and self.promotion_metric is not None:
            raise ValueError("promotion swaps a partition's champion: not with "
                             "model_state 'shared' (the default); set model_state = "
                             "'partition' to promote challengers")
        return self

    @model_validator(mode="after")
    def _fetch_within_request(self) -> Settings:
        """Refuse, when the settings are read, a fetch wait that a request cannot outlast.

        Why: the broker may hold a quiet fetch for the whole wait, so a request timeout at or
        below it times out every such fetch. kafka-python refuses to build such a consumer
        (and one whose request timeout reaches its 9-minute idle-connection limit), which
        `stream run` reported as "cannot reach Kafka ...; is the broker up?"; librdkafka
        builds it and only warns. The same holds for the readers' fetches
        (`READER_FETCH_WAIT_MS`).

        >>> try:
        ...     load_settings(environ={}, kafka_client="kafka-python", request_timeout_ms=100)
        ... except ConfigError as e:
        ...     print(str(e).split(": ", 1)[1][:81])
        Value error, fetch_max_wait_ms 100 (kafka-python's default) must be below request
        >>> load_settings(environ={}, request_timeout_ms=100).group_fetch  # librdkafka: 2 ms
        (32768, 2)
        """
        wait, timeout = self.group_fetch[1], self.request_timeout_ms
        if wait >= timeout:
            given = f" ({self.kafka_client}'s default)" if self.fetch_max_wait_ms is None else ""
            raise ValueError(
                f"fetch_max_wait_ms {wait}{given} must be below request_timeout_ms {timeout}: "
                "the broker may hold a fetch that long, and every such fetch would time out")
        if READER_FETCH_WAIT_MS >= timeout:
            raise ValueError(
                f"request_timeout_ms {timeout} must be above {READER_FETCH_WAIT_MS}, the fetch "
                "wait of the readers that restore state and follow the merchant feed")
        if self.kafka_client == "kafka-python" and timeout >= KAFKA_PYTHON_IDLE_MS:
            raise ValueError(
                f"request_timeout_ms {timeout} must be below kafka-python's "
                f"connections_max_idle_ms ({KAFKA_PYTHON_IDLE_MS}), which closes a connection "
                "idle that long")
        return self

    @model_validator(mode="after")
    def _one_state_key(self) -> Settings:
        if self.state_key is not None and self.state_key_file is not None:
            raise ValueError("give the state key once: state_key (FRAUDSTREAM_STATE_KEY) or "
                             "state_key_file, not both")
        if self.previous_state_key is not None and self.previous_state_key_file is not None:
            raise ValueError("give the previous state key once: previous_state_key "
                             "(FRAUDSTREAM_PREVIOUS_STATE_KEY) or previous_state_key_file")
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

    def internal_topic(self, name: str) -> str:
        """The name of this application's internal topic `name`: the one place internal
        topics (the changelog, and those to come) are named.

        >>> load_settings(environ={}, group_id="staging").internal_topic("changelog")
        'staging.changelog'
        """
        return f"{self.application_id}.{name}"

    def topic_names(self) -> dict[str, str]:
        """The one map from topic role (topics/<role>.toml) to the configured topic name; the
        changelog's role keeps its file's name, its topic is the application's."""
        return {"transactions": self.input_topic, "labels": self.labels_topic,
                "verdicts": self.output_topic, "transactions.dlq": self.dlq_topic,
                "transactions.changelog": self.changelog_topic,
                "transactions.merchant-feed": self.merchant_feed_topic,
                "transactions.merchant-images": self.merchant_images_topic}


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
