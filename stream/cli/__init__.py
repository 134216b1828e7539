"""The `stream` command."""

from __future__ import annotations

from stream.cli.app import main

__all__ = ["main"]
