"""The service's process metrics (prometheus-client), and what every layer needs to record them.

Counters and histograms live in the process that counts; ``GET /metrics`` (``app.observability``)
exposes them together with values read from Redis at scrape time. With several HTTP processes
(``serve --workers N``) the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory
before it starts them: prometheus-client then keeps each process's values in files there and
the answering process merges them (its multiprocess mode), so a scrape sees the sum over
processes, whichever one answers.

The busiest paths (every request, every Redis command) do not call prometheus-client for each
event: its values take a lock (and, with several processes, a write to a shared file) per
update, which cost a measurable share of a profile read. They count into ``Tally`` objects,
plain numbers that ``flush`` adds to the prometheus-client values in bulk: before every scrape
in the answering process, and once a second in every process (``flushing``), so a scrape sees
the other processes' counts at most a second late.

Names follow ``mdb_<what>_<unit>`` (docs/observability.md lists every metric). Label values
come from bounded sets only: route templates, command names from the code, queue and topic names
up to a cap (``ChannelLabels``), never user names, ids or raw paths.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

PREFIX = "mdb"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The label value that stands for every queue or topic beyond the cap.
OTHER = "_other"
# Label values of routes no route template matched (404s of unknown paths).
UNMATCHED = "<unmatched>"

# Request latency: from a cached read (well under a millisecond) to a long poll (seconds).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by method, route template and status class.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method, route template and "
    "status class.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    f"{PREFIX}_http_requests_in_progress",
    "HTTP requests being served now, by method (the route is known only once routed).",
    ["method"],
    multiprocess_mode="livesum",
)

REDIS_DURATION = Histogram(
    f"{PREFIX}_redis_command_duration_seconds",
    "Time from sending a Redis command to its reply (retries included), by command name.",
    ["command"],
    buckets=REDIS_BUCKETS,
)
REDIS_ERRORS = Counter(
    f"{PREFIX}_redis_command_errors",
    "Redis commands that failed, by command name and error class (an attempt the retry policy "
    "retried counts as well).",
    ["command", "error"],
)
REDIS_RETRIES = Counter(
    f"{PREFIX}_redis_retries",
    "Attempts the retry policy sent again after a transient failure (failover, lost "
    "connection, cluster reconfiguration).",
)
REDIS_RETRY_OUTCOMES = Counter(
    f"{PREFIX}_redis_retried_operations",
    "Operations that needed retries, by how they ended: recovered (the server answered again), "
    "or exhausted (answered 503).",
    ["outcome"],
)
REDIS_REDIRECTIONS = Counter(
    f"{PREFIX}_redis_redirections",
    "MOVED and ASK replies: a slot served elsewhere (failover, resharding).",
    ["kind"],
)
REDIS_POOL_EXHAUSTED = Counter(
    f"{PREFIX}_redis_pool_exhausted",
    "Times a node's connection pool had no free connection (redis.max_connections).",
)
REDIS_PIPELINE_BATCH = Histogram(
    f"{PREFIX}_redis_pipeline_batch_commands",
    "Commands per batch of the automatic pipeline (one write to one node).",
    buckets=BATCH_BUCKETS,
)
REDIS_FAILOVERS = Counter(
    f"{PREFIX}_redis_failovers_noticed",
    "Times this process saw a slot's primary change to another node (a failover or a slot "
    "migration), as the cluster client's slot table tells.",
)


# Series that exist from the start, at 0: Prometheus's increase() cannot see a counter's first
# step from nothing, so an alert on the first exhausted retry would miss it.
for _outcome in ("recovered", "exhausted"):
    REDIS_RETRY_OUTCOMES.labels(_outcome)
for _kind in ("moved", "ask"):
    REDIS_REDIRECTIONS.labels(_kind)


# How often every process adds its tallies to the values a scrape reads.
FLUSH_S = 1.0


class Tally:
    """Counts for one counter or gauge child, kept as a plain number until ``flush``: add to
    ``pending`` (a gauge going down subtracts)."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0
        _TALLIES.append(self)

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class HistogramTally:
    """Observations for one histogram child, kept as bucket counts until ``flush``.

    It adds them to the child's bucket and sum values directly (prometheus-client's Histogram
    has no bulk observe); ``tests/unit/test_metrics.py`` pins the attributes it uses.
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        _TALLIES.append(self)

    def observe(self, value: float) -> None:
        """Record one observation (in the first bucket whose bound is at least ``value``)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        if not any(self.counts):
            return
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        for bucket, count in zip(self.child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self.child._sum.inc(total)


_TALLIES: list[Tally | HistogramTally] = []


def flush() -> None:
    """Add every tally of this process to the values a scrape reads."""
    for tally in _TALLIES:
        tally.flush()


@asynccontextmanager
async def flushing(every_s: float = FLUSH_S) -> AsyncIterator[None]:
    """Flush this process's tallies every ``every_s`` seconds, and once more on exit."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every_s)
            flush()

    task = asyncio.get_running_loop().create_task(loop(), name="metrics-flush")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        flush()


def status_class(status: int) -> str:
    """Return the status class label of an HTTP status: ``2xx``, ``4xx``..."""
    return f"{status // 100}xx"


class ChannelLabels:
    """Label values for queue or topic names: the first ``cap`` names this process sees keep
    their own value, later ones share ``_other``, so a flood of names cannot grow the series
    without bound."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._known: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._known:
            return name
        if len(self._known) < self.cap:
            self._known.add(name)
            return name
        return OTHER


def multiprocess_dir() -> Path | None:
    """Return the directory of multiprocess mode, or None when this process counts alone."""
    path = os.environ.get(MULTIPROCESS_ENV)
    return Path(path) if path else None


def prepare_multiprocess_dir(path: Path) -> None:
    """Remove the metrics files of a previous run from ``path`` (creating it): they would be
    summed in. Nothing else in the directory is touched."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def process_exited(pid: int) -> None:
    """Drop the live gauges of an exited process (its counters stay in the sums)."""
    if multiprocess_dir() is not None:
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """Return the registry a scrape reads: every process's metrics, plus ``extra`` collectors.

    This process's tallies are flushed first, so its own counts are exact.
    """
    flush()
    if multiprocess_dir() is None:
        registry = REGISTRY
        if not extra:
            return registry
        combined = CollectorRegistry(auto_describe=False)
        combined.register(_Forward(registry))
    else:
        combined = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    for collector in extra:
        combined.register(collector)
    return combined


class _Forward(Collector):
    """The default registry's metrics, as one collector of another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()
