"""Read and write transaction files for `stream produce --file` and offline training.

Why this module does so little validation: the scorer is the one place that enforces the
`transactions` contract and dead-letters what breaks it. A replay therefore passes bad records on
(a JSON Lines line that is not valid JSON is yielded as its raw bytes) instead of silently
dropping them, so the dead-letter path sees exactly what a live producer would have sent.

CSV has no types, so a few conversions make CSV rows look like the JSON a producer would send:
`amount` becomes a float, `is_fraud` ("1"/"0"/"true"/"false") a bool, a numeric `timestamp` an
integer of epoch milliseconds; an empty cell means the field is absent; everything else stays
text. A cell that cannot be converted is kept as text, so the scorer reports it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from stream.errors import ConfigError

CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".jsonlines"})
_TRUE = frozenset({"1", "true", "t", "yes"})
_FALSE = frozenset({"0", "false", "f", "no"})


def read_events(path: Path | str) -> Iterator[dict[str, Any] | bytes]:
    """Stream the events in a CSV or JSON Lines file, chosen by suffix (case-insensitive)."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    if kind == "csv":
        return _read_csv(path)
    return _read_jsonl(path)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    known = ", ".join(sorted(CSV_SUFFIXES | JSONL_SUFFIXES))
    raise ConfigError(f"cannot tell the format of {path}: expected a suffix among {known}")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any] | bytes]:
    with path.open("rb") as handle:
        for line in handle:
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield raw
                continue
            # Valid JSON that is not an object breaks the contract too: pass the bytes on.
            yield obj if isinstance(obj, dict) else raw


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield _convert_row(row)


def _convert_row(row: dict[str | Any, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name, cell in row.items():
        if name is None or cell is None or cell == "":
            continue  # surplus cells (no header) or absent values
        event[name] = _convert_cell(name, cell)
    return event


def _convert_cell(name: str, cell: str) -> Any:
    if name == "amount":
        try:
            return float(cell)
        except ValueError:
            return cell
    if name == "is_fraud":
        lowered = cell.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return cell
    if name == "timestamp" and cell.strip().isdigit():
        return int(cell)
    return cell


def write_jsonl(events: Iterable[dict[str, Any] | bytes], path: Path | str) -> int:
    """Write one event per line (raw bytes written as they are); return the number written."""
    count = 0
    with Path(path).open("wb") as handle:
        for event in events:
            handle.write(event if isinstance(event, bytes) else orjson.dumps(event))
            handle.write(b"\n")
            count += 1
    return count


def write_csv(
    events: Iterable[dict[str, Any]], path: Path | str, columns: Sequence[str] | None = None
) -> int:
    """Write events as CSV with a header; return the number of rows written.

    Without `columns` the header is every field seen, in first-seen order (this holds all events
    in memory); pass `columns` to stream. Booleans are written "true"/"false", nested values as
    JSON, and missing fields as empty cells (read back as absent).
    """
    rows: Iterable[dict[str, Any]] = events
    if columns is None:
        rows = list(events)
        seen: dict[str, None] = {}
        for row in rows:
            if not isinstance(row, dict):
                raise TypeError(f"write_csv takes dict events, got {type(row).__name__}")
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    count = 0
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            if not isinstance(row, dict):
                raise TypeError(f"write_csv takes dict events, got {type(row).__name__}")
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
            count += 1
    return count


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value
