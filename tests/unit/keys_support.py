"""The state keys the unit tests sign and authenticate snapshots with (never real ones)."""

from __future__ import annotations

from pathlib import Path

from stream.state.keys import StateKey

KEY_TEXT = "unit-tests-only-state-key-0123456789abcdef"
KEY = StateKey.from_text(KEY_TEXT, "unit tests")
OTHER_KEY = StateKey.from_text("another-application-state-key-fedcba987654", "other")


def key_file(directory: Path) -> Path:
    """KEY in a file, for `--state-key-file`, readable by its owner only."""
    path = directory / "state.key"
    path.write_text(KEY_TEXT + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path
