"""Reading ``GET /metrics`` in tests: the samples by name and labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Return every sample of an exposition, keyed by sample name and label set."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


async def scrape(http: httpx.AsyncClient) -> Samples:
    """Scrape the service's /metrics and parse it."""
    answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return the sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def label_values(samples: Samples) -> set[str]:
    """Return every label value of every sample."""
    return {v for (_n, labels) in samples for _k, v in labels}


def series(samples: Samples, name: str) -> list[Mapping[str, str]]:
    """Return the label sets of the samples of ``name``."""
    return [dict(labels) for (n, labels) in samples if n == name]


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """Return how much the samples of ``name`` with ``labels`` grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def with_metrics(settings: Settings, **metrics: Any) -> Settings:
    """Return ``settings`` with these ``[metrics]`` settings changed."""
    return settings.model_copy(update={"metrics": settings.metrics.model_copy(update=metrics)})
