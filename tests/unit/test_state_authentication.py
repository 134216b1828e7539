"""State cannot execute code (issue 13, item 2), without a broker: every snapshot is signed
with the state key and authenticated before it is unpickled; a forged one is refused with one
clear line, and whatever its pickle would run never runs."""

from __future__ import annotations

import logging
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from keys_support import KEY, KEY_TEXT, OTHER_KEY, key_file

from stream.assembly import state_key
from stream.cli import main
from stream.config import load_settings
from stream.contracts.messages import Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.errors import ConfigError
from stream.state.changelog import MODEL_KEY, RestoredState, encode_changes, fold
from stream.state.keys import StateKey, dev_key
from stream.state.snapshot import (
    FORMAT_VERSION,
    MAGIC,
    PartitionSnapshot,
    SnapshotError,
    StateAuthenticationError,
    decode_snapshot,
    encode_snapshot,
    load_snapshot,
    read_header,
)


class Marker:
    """A pickle that, when loaded, creates a file: what an attacker's `os.system` would be."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _raw() -> bytes:
    pipe = Pipeline(PipelineConfig())
    for i in range(30):
        pipe.score(Transaction(f"t{i}", f"c{i % 4}", "m1", 10.0 + i, 1.7e9 + i, i % 7 == 0), 0)
    return encode_snapshot(pipe.export_partition(0), KEY)


def _forged(payload: bytes, header: dict[str, Any] | None = None, tag: bytes = b"") -> bytes:
    """A snapshot as an attacker writes it: a valid-looking header, any tag, any body."""
    head = orjson.dumps(header if header is not None else {
        "format": FORMAT_VERSION, "mac": "hmac-sha256", "key_id": KEY.key_id,
        "river": "0.22.0", "package": "0.1.0", "partition": 0, "events": 1, "learned": 1,
        "model_name": "x"})
    return MAGIC + struct.pack(">I", len(head)) + head + tag + payload


def test_a_signed_snapshot_round_trips() -> None:
    raw = _raw()
    assert read_header(raw)["format"] == 2 and read_header(raw)["key_id"] == KEY.key_id
    snapshot = decode_snapshot(raw, KEY)
    assert snapshot.events == 30 and snapshot.partition == 0


@pytest.mark.parametrize(("case", "message"), [
    ("missing key", "no state key is configured"),
    ("wrong key", "failed authentication: its tag does not match"),
    ("tampered body byte", "failed authentication"),
    ("tampered header byte", "failed authentication"),
    ("tampered tag byte", "failed authentication"),
    ("no tag", "carries no authentication tag"),
    ("old format", "snapshot format 1 is not supported: it is not signed"),
])
def test_a_snapshot_that_cannot_be_authenticated_is_refused(case: str, message: str) -> None:
    raw = _raw()
    header_end = len(MAGIC) + 4 + struct.unpack_from(">I", raw, len(MAGIC))[0]
    key: StateKey | None = KEY
    if case == "missing key":
        key = None
    elif case == "wrong key":
        key = OTHER_KEY
    elif case == "tampered body byte":
        raw = raw[:-10] + bytes([raw[-10] ^ 0x01]) + raw[-9:]
    elif case == "tampered header byte":
        raw = raw.replace(b'"events":30', b'"events":31')
    elif case == "tampered tag byte":
        raw = raw[:header_end] + bytes([raw[header_end] ^ 0x80]) + raw[header_end + 1:]
    elif case == "no tag":
        raw = raw[:header_end + 5]
    elif case == "old format":  # what format 1 wrote: header and pickle, no tag
        body = raw[header_end + 32:]
        raw = _forged(body, {**read_header(raw), "format": 1})
    with pytest.raises(SnapshotError, match=message) as refused:
        decode_snapshot(raw, key, "changelog t[0]")
    assert str(refused.value).startswith("changelog t[0]")
    assert "\n" not in str(refused.value)
    if case != "old format":
        assert isinstance(refused.value, StateAuthenticationError)


@pytest.mark.parametrize("tag", ["none", "zeros", "another key's", "format 1"])
def test_a_crafted_pickle_is_refused_without_running(tmp_path: Path, tag: str) -> None:
    """The attack of the issue: a record with a valid-looking header and a pickle whose
    `__reduce__` runs a command. Before authentication existed, decoding it ran the command."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Marker(marker))
    pickle.loads(payload)  # the payload does run when unpickled
    assert marker.exists()
    os.rmdir(marker)
    if tag == "none":
        raw = _forged(payload)
    elif tag == "zeros":
        raw = _forged(payload, tag=bytes(32))
    elif tag == "format 1":  # what the record of the issue was: the old, unsigned format
        raw = _forged(payload, {"format": 1, "river": "0.22.0"})
    else:  # signed, but by someone else's key
        head = _forged(b"")
        raw = head + OTHER_KEY.sign(head, payload) + payload
    with pytest.raises(SnapshotError):
        decode_snapshot(raw, KEY)
    (tmp_path / "forged.snapshot").write_bytes(raw)
    with pytest.raises(SnapshotError):
        load_snapshot(tmp_path / "forged.snapshot", KEY)
    assert not marker.exists()


def test_a_forged_changelog_snapshot_is_refused_on_restore_without_running(
        tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = PipelineConfig(track_changes=True, state_key=KEY)
    live = Pipeline(config)
    live.score(Transaction("t1", "c1", "m1", 10.0, 1.7e9, True), 0)
    restored = RestoredState()
    for key, value in encode_changes(live.drain_changes(0)):
        fold(restored, key, value)
    fold(restored, MODEL_KEY, _forged(pickle.dumps(Marker(marker)), tag=bytes(32)))
    with pytest.raises(StateAuthenticationError, match=r"^changelog t\[0\] model snapshot "
                       "failed authentication"):
        Pipeline(config).restore_from_changelog(0, restored, "changelog t[0]")
    assert not marker.exists()


def test_the_cli_refuses_a_forged_snapshot_file_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    forged = tmp_path / "model.snapshot"
    forged.write_bytes(_forged(pickle.dumps(Marker(marker)), tag=bytes(32)))
    history = tmp_path / "h.jsonl"
    history.write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["compare", str(forged), str(forged), "--file", str(history),
              "--state-key-file", str(key_file(tmp_path))])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: snapshot {forged} failed "
                                               "authentication"), err
    assert not marker.exists()


# -- the key -----------------------------------------------------------------------------------
def test_the_key_comes_from_the_setting_or_a_file_and_never_shows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from_env = state_key(load_settings(environ={"FRAUDSTREAM_STATE_KEY": KEY_TEXT}))
    from_file = state_key(load_settings(environ={}, state_key_file=key_file(tmp_path)))
    assert from_env.secret == from_file.secret == KEY.secret
    assert from_env.key_id == KEY.key_id
    config = PipelineConfig(state_key=from_env)
    assert KEY_TEXT not in repr(from_env) + repr(config) + str(from_env)
    with caplog.at_level(logging.INFO):
        logging.getLogger("stream.test").info("the key is %s (%r)", KEY_TEXT, KEY_TEXT.encode())
    assert KEY_TEXT not in caplog.text and "**********" in caplog.text


@pytest.mark.parametrize(("flags", "message"), [
    ({"security_protocol": "SSL"}, "no state key configured: with security_protocol SSL"),
    ({"state_key": "too-short"}, "too short"),
    ({"state_key_file": Path("/nonexistent/state.key")}, "state key file not found"),
])
def test_a_missing_or_bad_key_is_one_clear_error(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        state_key(load_settings(environ={}, **flags))


def test_giving_the_key_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give the state key once"):
        load_settings(environ={"FRAUDSTREAM_STATE_KEY": KEY_TEXT},
                      state_key_file=key_file(tmp_path))


def test_without_a_key_a_plaintext_cluster_gets_a_private_development_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state" / "dev-state.key"
    settings = load_settings(environ={}, dev_state_key_file=path)
    with caplog.at_level(logging.WARNING, logger="stream.assembly"):
        first = state_key(settings)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert state_key(settings).secret == first.secret  # made once, then read
    assert any("no state key configured" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    assert first.secret.decode() not in caplog.text
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        dev_key(path)


# -- rotation ----------------------------------------------------------------------------------
def _changelog_of(key: StateKey) -> RestoredState:
    live = Pipeline(PipelineConfig(track_changes=True, state_key=key))
    for i in range(20):
        live.score(Transaction(f"t{i}", f"c{i % 3}", "m1", 10.0 + i, 1.7e9 + i, i % 5 == 0), 0)
    restored = RestoredState()
    for name, value in encode_changes(live.drain_changes(0)):
        fold(restored, name, value)
    return restored


def test_a_rotated_key_reads_the_old_keys_state_and_re_signs_it_at_the_next_checkpoint(
        caplog: pytest.LogCaptureFixture) -> None:
    """The new key with the old one as previous: the old snapshot restores (with a WARNING),
    the partition is due for a checkpoint, and what that checkpoint writes is signed with
    the new key, which reads it without the old one. Without the previous key it is refused."""
    old_state = _changelog_of(OTHER_KEY)
    with pytest.raises(StateAuthenticationError, match="failed authentication"):
        Pipeline(PipelineConfig(state_key=KEY)).restore_from_changelog(0, old_state)
    rotating = StateKey.from_text(KEY_TEXT, "new", previous=(OTHER_KEY,))
    pipe = Pipeline(PipelineConfig(track_changes=True, state_key=rotating))
    with caplog.at_level(logging.WARNING, logger="stream.core.pipeline"):
        pipe.restore_from_changelog(0, old_state, "changelog t[0]")
    assert "changelog t[0]: model snapshot signed with a previous state key" in caplog.text
    assert pipe.export_partition(0).events == 20
    assert 0 in pipe.dirty  # re-signed at the next checkpoint, even with no new input
    resigned = RestoredState()
    for name, value in encode_changes(pipe.drain_changes(0)):
        fold(resigned, name, value)
    assert resigned.snapshot is not None
    assert read_header(resigned.snapshot)["key_id"] == KEY.key_id
    fresh = Pipeline(PipelineConfig(state_key=KEY))
    fresh.restore_from_changelog(0, resigned)
    assert fresh.export_partition(0).events == 20 and 0 not in fresh.dirty


def test_the_previous_key_authenticates_but_never_signs() -> None:
    rotating = StateKey.from_text(KEY_TEXT, "new", previous=(OTHER_KEY,))
    raw = encode_snapshot(PartitionSnapshot(0, None, 0.0, 3, 1), rotating)
    assert read_header(raw)["key_id"] == KEY.key_id
    assert decode_snapshot(raw, KEY).events == 3
    with pytest.raises(StateAuthenticationError, match=f"previous key id {OTHER_KEY.key_id}"):
        decode_snapshot(encode_snapshot(PartitionSnapshot(0, None, 0.0, 3, 1),
                                        StateKey.from_text("x" * 40, "stranger")), rotating)


def test_the_previous_key_comes_from_settings_only_with_a_current_one(tmp_path: Path) -> None:
    old_text = "another-application-state-key-fedcba987654"
    key = state_key(load_settings(environ={"FRAUDSTREAM_STATE_KEY": KEY_TEXT,
                                           "FRAUDSTREAM_PREVIOUS_STATE_KEY": old_text}))
    assert key.key_id == KEY.key_id and [k.key_id for k in key.previous] == [OTHER_KEY.key_id]
    old_file = tmp_path / "old.key"
    old_file.write_text(old_text + "\n")
    from_files = state_key(load_settings(environ={}, state_key_file=key_file(tmp_path),
                                         previous_state_key_file=old_file))
    assert [k.key_id for k in from_files.previous] == [OTHER_KEY.key_id]
    with pytest.raises(ConfigError, match="previous state key is set without a current one"):
        state_key(load_settings(environ={"FRAUDSTREAM_PREVIOUS_STATE_KEY": old_text}))
