"""The tallies of app.metrics, and the prometheus-client attributes they rely on."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from app.metrics import HistogramTally, Tally, flush


def test_a_histogram_tally_adds_what_observe_would() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=(0.1, 1, 5), registry=registry)
    tallied = Histogram("tallied_seconds", "t", buckets=(0.1, 1, 5), registry=registry)
    tally = HistogramTally(tallied)
    for value in (0.05, 0.1, 0.5, 1, 3, 7, 7, 0):
        direct.observe(value)
        tally.observe(value)
    flush()
    flush()  # a second flush adds nothing
    samples = {
        (s.name.split("_")[0], s.name.rsplit("_", 1)[1], s.labels.get("le")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }
    assert samples["tallied", "count", None] == 8
    for (kind, what, le), value in samples.items():
        if kind == "direct":
            assert samples["tallied", what, le] == value, (what, le)


def test_a_tally_adds_its_pending_count_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("things", "t", registry=registry)
    tally = Tally(counter)
    tally.pending += 3
    flush()
    flush()
    assert registry.get_sample_value("things_total") == 3
