"""The suite's own layout: pytest's default (prepend) import mode imports every test file by its
basename, so two test modules with the same name in different folders stop the whole run at
collection. A clean clone's CI found that once (`tests/unit` and `tests/integration` both had a
`test_application_state.py`); this check finds it before CI does."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_unique_basename() -> None:
    folders: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name != "__init__.py" and path.name != "conftest.py":
            folders[path.name].append(str(path.parent.relative_to(TESTS)))
    clashes = {name: where for name, where in folders.items() if len(where) > 1}
    assert clashes == {}, f"test modules sharing a basename: {clashes}"
