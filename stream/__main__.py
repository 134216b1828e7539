"""`python -m stream` is the same as the `stream` command."""

from __future__ import annotations

from stream.cli.app import main

main()
