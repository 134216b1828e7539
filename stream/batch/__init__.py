"""Batch modes: `stream train`, `stream replay`, `stream compare` and their reports."""
