"""The per-event histograms (observability/histogram.py) expose what prometheus_client's
Histogram exposes for the same observations: every bucket, the count and the sum, at the
same names, so dashboards and alerts cannot tell them apart."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.observability.histogram import BulkHistogram
from stream.observability.metrics import LATENCY_BUCKETS, Metrics

_VALUES = st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS), st.floats(0.0, 60.0)),
                   max_size=200)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.endswith("_created")}


@settings(max_examples=100, deadline=None)
@given(_VALUES, st.integers(0, 200))
def test_bulk_histogram_exposes_what_histogram_exposes(values: list[float], split: int) -> None:
    """Values on the bounds included (`le` is inclusive), observed one by one or in bulk."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "x", LATENCY_BUCKETS, ours)
    reference = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in values[:split]:
        bulk.observe(value)
    bulk.observe_many(values[split:])
    for value in values:
        reference.observe(value)
    got, want = _samples(ours), _samples(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-12, abs_tol=1e-12), key


def test_the_scorer_histograms_keep_their_names_and_refuse_bad_bounds() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.processing.observe(0.0002)
    metrics.end_to_end.observe_many([0.003, 0.2])
    assert registry.get_sample_value("fraudstream_processing_seconds_count") == 1.0
    assert registry.get_sample_value(
        "fraudstream_end_to_end_latency_seconds_bucket", {"le": "0.005"}) == 1.0
    assert registry.get_sample_value("fraudstream_end_to_end_latency_seconds_count") == 2.0
    with pytest.raises(ValueError, match="increasing"):
        BulkHistogram("y_seconds", "y", (1.0, 0.5), CollectorRegistry())
    with pytest.raises(ValueError, match="Duplicated"):  # one name per registry, as Histogram
        BulkHistogram("fraudstream_processing_seconds", "again", (1.0,), registry)
