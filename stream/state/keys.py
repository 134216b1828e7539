"""The state key: the secret that authenticates every snapshot this application writes.

Snapshots hold pickled River models, and unpickling runs code. A snapshot is therefore only
ever unpickled after its HMAC-SHA256 tag has been checked against this key
(`stream.state.snapshot`), so that writing to the changelog topic or replacing a snapshot
file is not enough to run code in the scorer: the writer must also hold the key.

The key comes from the settings (`state_key`, `state_key_file`, see README "Security"); the
development key (`dev_key`) is made once per user, readable by that user alone, for a local
broker that nobody else writes to. A `StateKey` never shows its secret: not in `repr`, not
in a message; it is named by `key_id`, a fingerprint that reveals nothing about it.

>>> key = StateKey.from_text("correct horse battery staple, 32+", "doctest")
>>> key
StateKey(key_id='492ce5051e60', source='doctest')
>>> key.verify(key.sign(b"data"), b"data"), key.verify(key.sign(b"data"), b"data!")
(True, False)

Rotation: a key can carry `previous` keys, which authenticate what they signed but never sign
(README "Rotating the state key"). Deploy the new key with the old one as previous; each
partition restored from an old-key snapshot is re-signed with the new key at its next
checkpoint; once none is left, drop the old key.

>>> old = StateKey.from_text("the key we are retiring, 32 chars+", "old")
>>> new = StateKey.from_text("correct horse battery staple, 32+", "new", previous=(old,))
>>> new.verifying(old.sign(b"data"), b"data") is old, new.verifying(new.sign(b"x"), b"y")
(True, None)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import ConfigError

MIN_KEY_CHARS = 32
"""Shortest key accepted: 32 characters (`openssl rand -hex 32` gives 64)."""
TAG_SIZE = hashlib.sha256().digest_size
_KEY_ID_LABEL = b"fraud-stream state key id"


@dataclass(frozen=True, slots=True)
class StateKey:
    """An HMAC-SHA256 key and where it came from (for messages); the secret is never shown."""

    secret: bytes = field(repr=False)
    source: str = ""
    key_id: str = field(init=False, default="")
    # Keys being retired: they authenticate, never sign (module docstring).
    previous: tuple[StateKey, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS:
            raise ConfigError(
                f"the state key from {self.source} is too short ({len(self.secret)} bytes): "
                f"use at least {MIN_KEY_CHARS} characters, e.g. `openssl rand -hex 32`")
        fingerprint = hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()
        object.__setattr__(self, "key_id", fingerprint[:12])

    def __repr__(self) -> str:
        return f"StateKey(key_id={self.key_id!r}, source={self.source!r})"

    @classmethod
    def from_text(cls, text: str, source: str,
                  previous: tuple[StateKey, ...] = ()) -> StateKey:
        """A key given as text (a setting, a file): surrounding whitespace is not part of it,
        so a file written by `echo` works."""
        return cls(text.strip().encode("utf-8"), source, previous)

    def sign(self, *parts: bytes | memoryview) -> bytes:
        """The tag of the concatenated `parts` (given apart: a large body is not copied)."""
        mac = hmac.new(self.secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()

    def verify(self, tag: bytes, *parts: bytes | memoryview) -> bool:
        """True when `tag` is the tag of `parts` under this key, compared in constant time."""
        return hmac.compare_digest(self.sign(*parts), tag)

    def verifying(self, tag: bytes, *parts: bytes | memoryview) -> StateKey | None:
        """The key, this one or a previous one, under which `tag` is the tag of `parts`."""
        for key in (self, *self.previous):
            if key.verify(tag, *parts):
                return key
        return None


def read_key_file(path: Path) -> str:
    """The text of a key file, with a one-line ConfigError when it cannot be read."""
    try:
        return path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"state key file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the state key file {path}: {exc}") from None


def dev_key(path: Path) -> str:
    """The development key at `path`, made on first use: 32 random bytes as hex, in a file
    only its owner can read (0600, its directory 0700). Made atomically (written under a
    temporary name, then linked into place), so two processes starting together agree.

    >>> import tempfile
    >>> where = Path(tempfile.mkdtemp()) / "state" / "dev-state.key"
    >>> first = dev_key(where)
    >>> first == dev_key(where), len(first), oct(where.stat().st_mode & 0o777)
    (True, 64, '0o600')
    """
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the development state key {path} is readable by other users: "
                          f"`chmod 600 {path}`, or configure a key of your own (state_key_file)")
    return read_key_file(path).strip()
