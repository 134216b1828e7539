"""Measuring tools of fraud-stream: `make quality` (detection quality) and, later, `make bench`.

Not part of the installed package: run them from a checkout (`python -m benchmarks.quality`).
"""
