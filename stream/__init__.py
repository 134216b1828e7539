"""fraud-stream: real-time fraud scoring on Kafka with an online River model."""

from __future__ import annotations

__version__ = "0.1.0"
