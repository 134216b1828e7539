"""Global options before or after the command: the same settings either way, for every command.

Every command is driven through `stream.cli.main` as a user would, with `settings_from` (and the
local broker for `stream kafka ...`) replaced by a probe that records what the command was
about to run with and stops it there, so no broker is needed.
"""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from stream.cli import app as cli_app
from stream.cli import argv as cli_argv
from stream.cli import batch as cli_batch
from stream.cli import main
from stream.cli.argv import Shape, clashes, normalise_argv, shape_of
from stream.cli.options import GLOBAL_NOTE
from stream.config import Settings

# Each command path with the least arguments that get it to build its settings.
COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("kafka", "up"): ["--port", "19999"],
    ("kafka", "down"): ["--port", "19999"],
    ("kafka", "status"): ["--port", "19999"],
    ("topics", "apply"): [],
    ("produce",): ["--count", "1", "--no-progress"],
    ("run",): ["--max-events", "0"],
    ("train",): ["--out", "model.snapshot", "--synthetic", "1"],
    ("replay",): ["--from-offset", "0"],
    ("compare",): ["a.snapshot", "b.snapshot"],
    ("demo",): ["--count", "1", "--seconds", "1"],
}
GLOBAL_NAMES = {"--bootstrap-servers", "--config", "--security-protocol", "--sasl-mechanism",
                "--sasl-username", "--sasl-password", "--ssl-cafile", "--kafka-client",
                "--application-id", "--adopt-state-from", "--state-key-file",
                "--previous-state-key-file", "--log-level"}


class Captured(Exception):
    """Raised by the probes: what the command would have run with."""

    def __init__(self, what: Any, obj: Any = None) -> None:
        super().__init__("captured")
        self.what, self.obj = what, obj


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cli_app.settings_from

    def settings_from(ctx: typer.Context, **flags: Any) -> Settings:
        raise Captured(real(ctx, **flags), ctx.find_root().obj)

    class Broker:
        def __init__(self, port: int, data_dir: Path | None = None) -> None:
            raise Captured(("broker", port, data_dir))

    monkeypatch.setattr(cli_app, "settings_from", settings_from)
    monkeypatch.setattr(cli_batch, "settings_from", settings_from)
    monkeypatch.setattr(cli_app, "LocalBroker", Broker)
    for name in ("FRAUDSTREAM_GROUP_ID", "FRAUDSTREAM_KAFKA_CLIENT", "KAFKA_BOOTSTRAP_SERVERS",
                 "FRAUDSTREAM_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fraud.toml"
    path.write_text('[kafka]\ngroup_id = "from-the-file"\n')
    return path


def _globals(config: Path, equals: bool = False) -> list[str]:
    pairs = [("--bootstrap-servers", "broker-1:9093"), ("--config", str(config)),
             ("--security-protocol", "SASL_SSL"), ("--sasl-mechanism", "PLAIN"),
             ("--sasl-username", "alice"), ("--sasl-password", "s3cret"),
             ("--ssl-cafile", "/etc/ca.pem"), ("--kafka-client", "kafka-python"),
             ("--application-id", "green"), ("--adopt-state-from", "blue"),
             ("--state-key-file", "/etc/fraud-stream/state.key"), ("--log-level", "warning")]
    if equals:
        return [f"{name}={value}" for name, value in pairs]
    return [token for pair in pairs for token in pair]


def _captured(argv: list[str]) -> Captured:
    with pytest.raises(Captured) as caught:
        main(argv)
    return caught.value


def _shape() -> Shape:
    return shape_of(typer.main.get_command(cli_app.app))


def _leaves(shape: Shape, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not shape.commands:
        return {path}
    return set().union(*(_leaves(sub, (*path, name)) for name, sub in shape.commands.items()))


def test_the_argv_normaliser_examples_hold() -> None:
    result = doctest.testmod(cli_argv)
    assert result.attempted >= 5 and result.failed == 0


def test_every_command_is_covered_and_the_globals_are_the_callbacks() -> None:
    shape = _shape()
    assert _leaves(shape) == set(COMMANDS)
    assert set(shape.options) == GLOBAL_NAMES
    assert all(takes == 1 for takes in shape.options.values())


def test_no_command_defines_an_option_named_like_a_global_one() -> None:
    # Such an option would shadow the global one after that command: rename it instead.
    assert clashes(_shape()) == {}


def test_a_command_option_named_like_a_global_one_is_found_and_never_moved() -> None:
    app = typer.Typer()

    @app.callback()
    def _root(log_level: Annotated[str, typer.Option()] = "INFO") -> None: ...

    @app.command()
    def tool(log_level: Annotated[str, typer.Option()] = "x") -> None: ...

    @app.command()
    def other() -> None: ...

    shape = shape_of(typer.main.get_command(app))
    assert clashes(shape) == {"tool": {"--log-level"}}
    assert normalise_argv(["tool", "--log-level", "DEBUG"], shape) == \
        ["tool", "--log-level", "DEBUG"]
    assert normalise_argv(["other", "--log-level", "DEBUG"], shape) == \
        ["--log-level", "DEBUG", "other"]


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_after_the_command_is_the_same_as_before_it(path: tuple[str, ...],
                                                    config_file: Path) -> None:
    args, shape = COMMANDS[path], _shape()
    before = [*_globals(config_file), *path, *args]
    assert normalise_argv([*path, *args, *_globals(config_file)], shape) == before
    assert normalise_argv([*path, *_globals(config_file), *args], shape) == before
    equals = normalise_argv([*path, *args, *_globals(config_file, equals=True)], shape)
    assert equals == [*_globals(config_file, equals=True), *path, *args]


@pytest.mark.usefixtures("probe")
@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_command_runs_with_the_same_settings_either_way(path: tuple[str, ...],
                                                              config_file: Path) -> None:
    args = COMMANDS[path]
    forms = {
        "before": [*_globals(config_file), *path, *args],
        "after": [*path, *args, *_globals(config_file)],
        "between": [*path, *_globals(config_file), *args],
        "equals": [*path, *args, *_globals(config_file, equals=True)],
    }
    seen = {form: _captured(argv) for form, argv in forms.items()}
    first = seen["before"]
    for form, captured in seen.items():
        assert captured.what == first.what, form
        assert captured.obj == first.obj, form
    if path[0] == "kafka":
        assert first.what == ("broker", 19999, None)
        return
    settings = first.what
    assert isinstance(settings, Settings)
    assert settings.bootstrap_servers == "broker-1:9093"
    assert settings.group_id == "from-the-file"  # --config was read
    assert settings.security_protocol == "SASL_SSL" and settings.sasl_mechanism == "PLAIN"
    assert settings.sasl_plain_username == "alice"
    assert settings.sasl_plain_password is not None
    assert settings.sasl_plain_password.get_secret_value() == "s3cret"
    assert settings.ssl_cafile == "/etc/ca.pem"
    assert settings.kafka_client == "kafka-python"
    assert (settings.application_id, settings.adopt_state_from) == ("green", "blue")
    assert settings.changelog_topic == "green.changelog"
    assert settings.state_key_file == Path("/etc/fraud-stream/state.key")
    assert first.obj["log_level"] == "WARNING"


@pytest.mark.usefixtures("probe")
def test_kafka_client_defaults_to_librdkafka_and_is_read_after_the_command() -> None:
    assert _captured(["run"]).what.kafka_client == "librdkafka"
    assert _captured(["run", "--kafka-client", "kafka-python"]).what.kafka_client == \
        "kafka-python"


@pytest.mark.usefixtures("probe")
def test_a_value_that_looks_like_a_command_stays_a_value() -> None:
    for argv in (["run", "--sasl-username", "run"], ["--sasl-username", "run", "run"],
                 ["run", "--sasl-username=run"], ["topics", "apply", "--sasl-username", "demo"]):
        assert _captured(argv).what.sasl_plain_username == argv[-1].split("=")[-1], argv
    # A command's own option keeps a value that looks like a global option.
    assert _captured(["run", "--group-id", "--log-level"]).what.group_id == "--log-level"


@pytest.mark.usefixtures("probe")
def test_a_global_option_given_twice_takes_the_last_as_typer_does() -> None:
    typer_itself = ["--bootstrap-servers", "a:1", "--bootstrap-servers", "b:2", "run"]
    assert _captured(typer_itself).what.bootstrap_servers == "b:2"
    for argv in (["--bootstrap-servers", "a:1", "run", "--bootstrap-servers", "b:2"],
                 ["run", "--bootstrap-servers", "a:1", "--bootstrap-servers=b:2"],
                 ["run", "--bootstrap-servers=a:1", "--max-events", "3",
                  "--bootstrap-servers", "b:2"]):
        assert _captured(argv).what.bootstrap_servers == "b:2", argv


def test_nothing_after_double_dash_is_moved() -> None:
    argv = ["compare", "--", "--log-level", "DEBUG"]
    assert normalise_argv(argv, _shape()) == argv


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["run", "--no-such-option", "--bootstrap-servers", "h:1"], "No such option: --no-such"),
    (["run", "--max-events", "0", "--bootstrap-servers"],
     "Option '--bootstrap-servers' requires an argument"),
    (["run", "--kafka-client", "nope"], "Invalid value for '--kafka-client'"),
    (["topics", "apply", "--log-level"], "Option '--log-level' requires an argument"),
])
def test_usage_errors_still_exit_2_with_typers_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _exit(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_deliberate_error_is_still_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    code, _, err = _exit(["produce", "--file", str(missing), "--bootstrap-servers", "h:1"],
                         capsys)
    assert code == 1 and err == f"error: file not found: {missing}\n"


def test_help_lists_the_globals_and_every_command_says_they_go_anywhere(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _exit(["--help"], capsys)
    assert code == 0 and all(name in out for name in GLOBAL_NAMES)
    assert "before or after the command" in out
    note = "".join(GLOBAL_NOTE.split())  # help is wrapped anywhere, even at hyphens
    for path in [*COMMANDS, ("kafka",), ("topics",)]:
        code, out, _ = _exit([*path, "--help"], capsys)
        assert code == 0 and note in "".join(out.split()), path
