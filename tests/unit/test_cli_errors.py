"""The CLI's exit boundary: one exception root, caught once, one `error:` line; a bug keeps
its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import stream
from stream.cli import app as cli_app
from stream.cli import main
from stream.errors import FraudStreamError
from stream.kafka.classify import ClientError
from stream.kafka.testing import MemoryProducer


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0), capsys.readouterr().err


def test_every_error_class_of_the_project_derives_from_the_root() -> None:
    found = []
    for info in pkgutil.walk_packages(stream.__path__, "stream."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, BaseException):
                found.append(cls)
                assert issubclass(cls, FraudStreamError), f"{info.name}.{cls.__name__}"
    assert len(found) >= 10


def test_a_file_of_unknown_format_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("{}\n")
    code, err = _run(["produce", "--file", str(data), "--no-progress"], capsys)
    assert code == 1
    assert err.startswith("error: cannot tell the format of") and err.count("\n") == 1
    assert "Traceback" not in err


class _Refusing(MemoryProducer):
    """The broker refuses every record (e.g. too large for it)."""

    def ack(self, n: int | None = None, error: ClientError | None = None) -> int:
        return super().ack(n, ClientError("Broker: Message size too large", kind="too_large"))


class _Clients:
    def __init__(self, producer: MemoryProducer) -> None:
        self._producer = producer

    def producer(self, transactional_id: str | None = None, linger_ms: float = 2.0) -> Any:
        return self._producer


def test_failed_sends_are_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_app, "connect", lambda settings: _Clients(_Refusing()))
    code, err = _run(["produce", "--count", "5", "--no-progress"], capsys)
    assert code == 1
    assert err.startswith("error: ") and "could not be delivered" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli_app, "connect", broken)
    with pytest.raises(ZeroDivisionError):
        main(["produce", "--count", "1", "--no-progress"])
