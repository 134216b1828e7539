"""The core does no I/O: importing it (features, scoring, evaluation, pipeline, and the pure
state encoding) loads no Kafka client, no pydantic, no HTTP server or client of ours, and no
layer above it. Checked in a fresh interpreter, where nothing else was imported first."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("confluent_kafka", "kafka", "pydantic", "pydantic_settings", "prometheus_client",
             "http.server", "socketserver", "typer", "rich")
ALLOWED_PROJECT = ("stream", "stream.core", "stream.contracts", "stream.state", "stream.errors")

_PROBE = """
import importlib, json, pkgutil, sys
import stream.core, stream.state
for package in (stream.core, stream.state):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded() -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_core_imports_no_client_no_pydantic_no_http_and_no_upper_layer() -> None:
    loaded = _loaded()
    assert "stream.core.pipeline" in loaded and "stream.state.changelog" in loaded
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
    ours = [m for m in loaded if m == "stream" or m.startswith("stream.")]
    upper = [m for m in ours
             if not any(m == a or m.startswith(a + ".") for a in ALLOWED_PROJECT[1:])
             and m != "stream"]
    assert upper == []
