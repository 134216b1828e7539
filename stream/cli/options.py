"""The `stream` command's global options: the root callback, how they reach Settings, and the
note every command's help carries.

The global options are the root callback's parameters and nothing else: `stream.cli.argv`
reads them from the built Click command to let them come before or after the command name, so
an option added here is accepted anywhere without a second list to keep in step.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from stream.config import Settings, load_settings

Opt = typer.Option
KafkaClient = Literal["librdkafka", "kafka-python"]

GLOBAL_NOTE = ("Global options (--bootstrap-servers, --config, --kafka-client, --log-level, ...: "
               "see `stream --help`) are accepted before or after the command.")


def global_options(
    ctx: typer.Context,
    bootstrap_servers: Annotated[str | None, Opt(help="Kafka bootstrap servers.")] = None,
    config: Annotated[Path | None, Opt(help="TOML config file.")] = None,
    security_protocol: Annotated[str | None, Opt(help="PLAINTEXT, SSL, SASL_*.")] = None,
    sasl_mechanism: Annotated[str | None, Opt()] = None,
    sasl_username: Annotated[str | None, Opt()] = None,
    sasl_password: Annotated[
        str | None, Opt(help="Prefer env FRAUDSTREAM_SASL_PLAIN_PASSWORD.")] = None,
    ssl_cafile: Annotated[str | None, Opt()] = None,
    kafka_client: Annotated[KafkaClient | None, Opt(
        metavar="CLIENT", help="librdkafka (confluent-kafka, the default) or kafka-python."
    )] = None,
    application_id: Annotated[str | None, Opt(
        metavar="ID", help="The application: names its internal topics, such as the state "
        "changelog <ID>.changelog (default: the group id).")] = None,
    adopt_state_from: Annotated[str | None, Opt(
        metavar="ID", help="Take over the state application ID wrote to the changelog "
        "(blue/green); recorded, so needed once.")] = None,
    state_key_file: Annotated[Path | None, Opt(
        metavar="FILE", help="The key that signs and authenticates state snapshots (the "
        "changelog's and snapshot files); or env FRAUDSTREAM_STATE_KEY.")] = None,
    previous_state_key_file: Annotated[Path | None, Opt(
        metavar="FILE", help="Key rotation: the state key being retired, which still "
        "authenticates the snapshots it signed; or env FRAUDSTREAM_PREVIOUS_STATE_KEY.")
    ] = None,
    log_level: Annotated[str, Opt(help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """Accepted before or after the command (`stream.cli.argv` moves them in front)."""
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_clients(log_level.upper() != "DEBUG")
    ctx.obj = {
        "config_file": config,
        "log_level": log_level.upper(),
        "flags": {
            "bootstrap_servers": bootstrap_servers,
            "security_protocol": security_protocol,
            "sasl_mechanism": sasl_mechanism,
            "sasl_plain_username": sasl_username,
            "sasl_plain_password": sasl_password,
            "ssl_cafile": ssl_cafile,
            "kafka_client": kafka_client,
            "application_id": application_id,
            "adopt_state_from": adopt_state_from,
            "state_key_file": state_key_file,
            "previous_state_key_file": previous_state_key_file,
        },
    }


class _ClientLines(logging.Filter):
    """Drops the Kafka clients' own lines below CRITICAL. Both log every failed reconnect
    and every refused login, again and again (kafka-python at ERROR, librdkafka's "FAIL"
    lines); our own lines and the one `error:` line say what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        client = name in ("kafka", "rdkafka") or name.startswith("kafka.")
        return not client or record.levelno >= logging.CRITICAL


_CLIENT_LINES = _ClientLines()


def quiet_clients(quiet: bool) -> None:
    """Keep the clients' lines out of the log (unless `--log-level DEBUG`). At the handlers,
    not by raising the clients' loggers' level: the kafka-python adapter hears refused logins
    from those records (stream.kafka.kafkapython_errors), so they must still be made."""
    for handler in logging.getLogger().handlers:
        if quiet:
            handler.addFilter(_CLIENT_LINES)
        else:
            handler.removeFilter(_CLIENT_LINES)
    if quiet and logging.getLogger("kafka").getEffectiveLevel() < logging.WARNING:
        # kafka-python's INFO lines from closing its connections can come after `main` has
        # printed the one `error:` line and lifted the filter (the clients close as the
        # process ends); its WARNING+ records, which the adapter listens to, are still made.
        logging.getLogger("kafka").setLevel(logging.WARNING)


def settings_from(ctx: typer.Context, **flags: Any) -> Settings:
    """Global flags + this command's flags over env, TOML and defaults."""
    obj = ctx.find_root().obj or {}
    merged = {**obj.get("flags", {}), **flags}
    return load_settings(obj.get("config_file"), **merged)


def note_global_options(app: typer.Typer) -> None:
    """Add GLOBAL_NOTE to the help of every command and command group of `app`, recursively,
    so `stream run --help` says that `--bootstrap-servers` may follow `run`."""
    for command in app.registered_commands:
        if not command.epilog:
            command.epilog = GLOBAL_NOTE
    for group in app.registered_groups:
        if not group.epilog:
            group.epilog = GLOBAL_NOTE
        if group.typer_instance is not None:
            note_global_options(group.typer_instance)
