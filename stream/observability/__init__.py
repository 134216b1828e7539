"""Observability: the metric catalogue, health endpoints, lag and quality gauges."""
