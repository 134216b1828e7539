"""The local broker's paths: the JVM runs inside its data directory, so every path it is
given must be absolute (a relative `--data-dir` used to be resolved twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.devtools.broker import LocalBroker


def test_a_relative_data_dir_is_made_absolute_before_the_jvm_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = LocalBroker(port=19092, data_dir=Path("reldir"))
    assert broker.data_dir == tmp_path / "reldir"
    broker.data_dir.mkdir()
    props = broker._write_properties()
    # `kafka.Kafka <props>` runs with cwd=data_dir: a relative props path (or log.dirs) would
    # point at data_dir/reldir/..., which does not exist.
    assert props.is_absolute() and props.is_file()
    log_dirs = next(line for line in props.read_text().splitlines()
                    if line.startswith("log.dirs="))
    assert Path(log_dirs.split("=", 1)[1]).is_absolute()
    for path in (broker.log_dir, broker.pid_file, broker.log_file):
        assert path.is_absolute()


def test_a_data_dir_under_home_is_expanded(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert LocalBroker(data_dir=Path("~/kafka")).data_dir == tmp_path / "kafka"
