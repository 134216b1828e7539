"""Global options before or after the command: argv is normalised before Typer parses it.

Click only accepts a group's options before the subcommand, so `stream run --bootstrap-servers
HOST:9092`, what a newcomer types, would be a usage error. `normalise_argv` moves every global
option found after the command name (`--opt value` and `--opt=value`) to just before it, in the
order given, so the last one still wins as it does in Click. It needs to know the shape of the
command tree (which options take a value, which names are subcommands) so that an option's
value is never mistaken for a command or an option, however it looks. It stops at `--`, and it
never moves an option that the command itself defines under the same name.

Pure functions on plain data, so they are testable without Typer; `shape_of` reads the shape
from the Click command Typer builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Shape:
    """What normalisation must know of one command: how many values each of its options takes
    (0 for a flag) and its subcommands. The root's options are the global options."""

    options: Mapping[str, int] = field(default_factory=dict)
    commands: Mapping[str, Shape] = field(default_factory=dict)


def normalise_argv(argv: Sequence[str], root: Shape) -> list[str]:
    """Move the root's (global) options found after the command name to just before it.

    >>> root = Shape({"--bootstrap-servers": 1, "--log-level": 1},
    ...              {"run": Shape({"--max-events": 1}), "kafka": Shape({}, {"up": Shape()})})
    >>> normalise_argv(["run", "--max-events", "5", "--bootstrap-servers", "h:9092"], root)
    ['--bootstrap-servers', 'h:9092', 'run', '--max-events', '5']
    >>> normalise_argv(["--log-level", "DEBUG", "kafka", "up", "--log-level=INFO"], root)
    ['--log-level', 'DEBUG', '--log-level=INFO', 'kafka', 'up']
    >>> normalise_argv(["run", "--bootstrap-servers", "run"], root)  # a value, not a command
    ['--bootstrap-servers', 'run', 'run']
    >>> normalise_argv(["run", "--", "--log-level", "DEBUG"], root)  # nothing after --
    ['run', '--', '--log-level', 'DEBUG']

    A global option left without its value ends the argv, so that Click reports the missing
    value at the root exactly as it does when the option comes first:

    >>> normalise_argv(["run", "--max-events", "5", "--bootstrap-servers"], root)
    ['--bootstrap-servers']
    """
    kept: list[str] = []
    moved: list[str] = []
    command_at: int | None = None  # index in `kept` of the first command name
    shape = root
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            kept.extend(argv[i:])
            break
        if token.startswith("-") and token != "-":
            name, equals, _ = token.partition("=")
            if shape is not root and name in root.options and name not in shape.options:
                group = list(argv[i:i + 1 + (0 if equals else root.options[name])])
                if not equals and len(group) < 1 + root.options[name]:
                    return kept[:command_at] + moved + [token]
                moved.extend(group)
                i += len(group)
                continue
            takes = 0 if equals else shape.options.get(name, 0)
            kept.extend(argv[i:i + 1 + takes])
            i += 1 + takes
            continue
        kept.append(token)
        sub = shape.commands.get(token)
        if sub is not None:
            if shape is root:
                command_at = len(kept) - 1
            shape = sub
        i += 1
    if command_at is None:
        return kept
    return kept[:command_at] + moved + kept[command_at:]


def shape_of(command: Any) -> Shape:
    """The shape of a Click command (as `typer.main.get_command` builds it), recursively.

    Read from the command objects rather than declared by hand, so a new command or option is
    covered the moment it exists.
    """
    options: dict[str, int] = {}
    for param in getattr(command, "params", ()):
        if getattr(param, "param_type_name", "") != "option":
            continue
        takes = 0 if getattr(param, "is_flag", False) or getattr(param, "count", False) \
            else int(getattr(param, "nargs", 1))
        for name in (*param.opts, *getattr(param, "secondary_opts", ())):
            options[name] = takes
    subcommands = getattr(command, "commands", {})
    return Shape(options, {name: shape_of(sub) for name, sub in subcommands.items()})


def clashes(root: Shape) -> dict[str, set[str]]:
    """Commands (as 'kafka up') that define an option with a global option's name: such an
    option would silently stop being movable there. Expected empty; a test keeps it so."""
    found: dict[str, set[str]] = {}

    def walk(path: str, shape: Shape) -> None:
        same = set(shape.options) & set(root.options)
        if same:
            found[path] = same
        for name, sub in shape.commands.items():
            walk(f"{path} {name}".strip(), sub)

    for name, sub in root.commands.items():
        walk(name, sub)
    return found
