"""`stream topics apply --bootstrap-servers <broker>`, global options after the command, as a
newcomer types it, against the real broker (in a subprocess, exactly as from a shell)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("input_topic", "labels_topic", "output_topic", "dlq_topic", "changelog_topic")


@pytest.fixture
def topic_config(tmp_path: Path, admin: Any) -> Iterator[tuple[Path, list[str]]]:
    """A config file naming this test's own topics; they are deleted afterwards."""
    prefix = f"it-cli-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.{key.removesuffix('_topic')}" for key in KEYS]
    path = tmp_path / "topics.toml"
    path.write_text("".join(f'{key} = "{name}"\n' for key, name in zip(KEYS, names, strict=True))
                    + f'application_id = "{prefix}"\n')
    # The application's internal topics are named after it: the merchant feed and its
    # images too.
    names += [f"{prefix}.merchant-feed", f"{prefix}.merchant-images"]
    yield path, names
    doomed = [name for name in names if name in set(admin.list_topics())]
    if doomed:
        admin.delete_topics(doomed, raise_errors=False)


def _stream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


def test_topics_apply_takes_the_broker_after_the_command(
    kafka_bootstrap: str, topic_config: tuple[Path, list[str]], admin: Any
) -> None:
    config, names = topic_config
    first = _stream("topics", "apply", "--bootstrap-servers", kafka_bootstrap,
                    "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert sorted(first.stdout.split()[1::2]) == sorted(names)
    assert all(line.startswith("created") for line in first.stdout.splitlines())
    assert set(names) <= set(admin.list_topics())

    # The `=` form, mixed with the global option before the command: the same broker, again.
    again = _stream("--config", str(config), "topics", "apply",
                    f"--bootstrap-servers={kafka_bootstrap}")
    assert again.returncode == 0, again.stderr
    assert all(line.startswith("unchanged") for line in again.stdout.splitlines())
    assert len(again.stdout.splitlines()) == len(names)


def test_a_wrong_broker_after_the_command_is_one_error_line() -> None:
    from stream.devtools.broker import find_free_port

    result = _stream("topics", "apply", "--bootstrap-servers", f"127.0.0.1:{find_free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
