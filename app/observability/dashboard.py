"""The live dashboard: ``GET /dashboard`` (one self-contained page) and ``GET /dashboard/data``.

The data is built from the same metric families ``GET /metrics`` exposes (every process's
counters merged, plus the values read from Redis by ``StateCache``), so the page and Prometheus
never disagree. Counters stay cumulative: the page keeps its last minutes of samples and derives
rates, the error rate and latency quantiles from their deltas, as ``rate()`` and
``histogram_quantile()`` would. Queues and topics come deepest first, a page at a time, from
the messaging domain's ``channel_overview``: the same cached read the queue and topic gauges of
``/metrics`` come from (at most ``metrics.max_channels`` channels per refresh), so an answer
stays small with thousands of queues.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client.metrics_core import Metric
from pydantic import Field

from app import messaging
from app.domain import Context
from app.errors import NotFound
from app.metrics import scrape_registry
from app.observability.state import StateCache
from app.redis import describe
from app.reporting import top_profiles
from app.schemas import Schema

logger = logging.getLogger(__name__)

dashboard_router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

# How often the page asks for new data, and how much history it keeps for its charts.
REFRESH_MS = 2000
HISTORY_S = 300
TOP_PROFILES = 10
DEFAULT_PAGE = 20
MAX_PAGE = 100
PROFILE_STREAM = "profile:events"
# The observability routes themselves: the page's own polling is not the API's traffic.
OWN_ROUTES = frozenset({"/metrics", "/dashboard", "/dashboard/data"})

# Everything the page loads comes from this origin; its script and style carry the nonce.
CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class Node(Schema):
    node: str
    role: str
    shard: str
    up: bool
    memory_bytes: float | None
    ops_per_s: float | None
    clients: float | None
    commands_processed: float | None


class Cluster(Schema):
    shards: int
    nodes: list[Node]


class RedisHealth(Schema):
    """Cumulative counts of the Redis client's trouble, summed over processes."""

    command_errors: float
    retries: float
    retries_recovered: float
    retries_exhausted: float
    redirections: float
    pool_exhausted: float
    failovers_noticed: float


class Group(Schema):
    group: str
    lag: float
    pending: float
    oldest_pending_age_s: float
    consumers: float


class Stream(Schema):
    stream: str
    length: float
    groups: list[Group]


class ProfileReads(Schema):
    user: str
    reads: int


class Pipeline(Schema):
    """The profile event pipeline: its stream, the events applied, the most-read profiles."""

    stream: Stream | None
    applied_total: float
    # None when the read counts could not be read this time.
    top_profiles: list[ProfileReads] | None


class Queue(Schema):
    name: str
    ready: int
    delayed: int
    in_flight: int
    dead: int
    oldest_ready_age_s: float
    # Cumulative counts by event (published, delivered, acked...): the page derives rates.
    # Empty for a queue whose counters share the label value "_other".
    events: dict[str, float]


class Topic(Schema):
    name: str
    length: int
    lag: int
    pending: int
    oldest_pending_age_s: float
    groups: list[Group]
    events: dict[str, float]


class ChannelPage(Schema):
    """One page of the queues or topics, deepest first."""

    known: int = Field(description="Channels of this kind the service knows")
    read: int = Field(description="Channels read by the last refresh: the pages run over these")
    offset: int
    limit: int
    # Cumulative counts by event over every channel of this kind.
    events: dict[str, float]


class QueuePage(ChannelPage):
    items: list[Queue]


class TopicPage(ChannelPage):
    items: list[Topic]


class RouteCounts(Schema):
    method: str
    route: str
    requests: float
    errors: float
    seconds: float


class Api(Schema):
    """Cumulative HTTP counts summed over routes (the observability routes left out)."""

    requests: dict[str, float] = Field(description="Requests by status class")
    in_progress: float
    # (upper bound in seconds, cumulative count); the last bound is +Inf, sent as null.
    buckets: list[tuple[float | None, float]]
    routes: list[RouteCounts]


class DashboardData(Schema):
    time: float
    state_age_s: float
    version: str
    cluster: Cluster
    redis: RedisHealth
    pipeline: Pipeline
    # None when the queues or topics could not be read this time.
    queues: QueuePage | None
    topics: TopicPage | None
    api: Api


Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def _state(request: Request) -> StateCache:
    state: StateCache | None = request.state.observability
    if state is None:
        raise NotFound("The dashboard is disabled (metrics.enabled = false)")
    return state


@dashboard_router.get("/dashboard", include_in_schema=False, response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    """Show the live dashboard."""
    _state(request)
    nonce = secrets.token_urlsafe(16)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "nonce": nonce,
            "refresh_ms": REFRESH_MS,
            "history_s": HISTORY_S,
            "page_size": DEFAULT_PAGE,
        },
        headers={"Content-Security-Policy": CSP.format(nonce=nonce), "Cache-Control": "no-store"},
    )


@dashboard_router.get("/dashboard/data", include_in_schema=False)
async def dashboard_data(
    request: Request,
    queues_offset: Offset = 0,
    queues_limit: Limit = DEFAULT_PAGE,
    topics_offset: Offset = 0,
    topics_limit: Limit = DEFAULT_PAGE,
) -> DashboardData:
    """Return what the dashboard shows: the cluster, the pipeline, queues, topics, the API."""
    state = _state(request)
    families = await state.families()
    registry = scrape_registry([state.collector(families)])
    # With several processes this reads their files: off the event loop.
    collected = await anyio.to_thread.run_sync(lambda: list(registry.collect()))
    samples = Samples(collected)
    return DashboardData(
        time=time.time(),
        state_age_s=samples.total("mdb_metrics_state_age_seconds"),
        version=next((s["version"] for s, _ in samples.get("mdb_build_info")), ""),
        cluster=_cluster(samples),
        redis=_redis_health(samples),
        pipeline=Pipeline(
            stream=_profile_events(_streams(samples)),
            applied_total=samples.total("mdb_profile_events_applied_total"),
            top_profiles=await _top_profiles(state),
        ),
        queues=await _queues(state.context, samples, offset=queues_offset, limit=queues_limit),
        topics=await _topics(state.context, samples, offset=topics_offset, limit=topics_limit),
        api=_api(samples),
    )


Labels = dict[str, str]


class Samples:
    """Every sample of a scrape by sample name (``mdb_x_total``, ``mdb_y_bucket``...)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in families:
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

    def get(self, name: str) -> list[tuple[Labels, float]]:
        """Return the samples of ``name``."""
        return self._by_name.get(name, [])

    def total(self, name: str, **labels: str) -> float:
        """Return the sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = labels.items()
        return sum(value for have, value in self.get(name) if wanted <= have.items())

    def by(self, name: str, label: str) -> dict[str, float]:
        """Return the samples of ``name`` summed by the value of ``label``."""
        found: dict[str, float] = defaultdict(float)
        for labels, value in self.get(name):
            found[labels.get(label, "")] += value
        return dict(found)

    def by_two(self, name: str, first: str, second: str) -> dict[str, dict[str, float]]:
        """Return the samples of ``name`` summed by ``first``, then by ``second``."""
        found: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for labels, value in self.get(name):
            found[labels.get(first, "")][labels.get(second, "")] += value
        return {key: dict(inner) for key, inner in found.items()}


def _cluster(samples: Samples) -> Cluster:
    up = samples.by("mdb_redis_node_up", "node")
    memory = samples.by("mdb_redis_node_memory_used_bytes", "node")
    ops = samples.by("mdb_redis_node_ops_per_second", "node")
    clients = samples.by("mdb_redis_node_connected_clients", "node")
    processed = samples.by("mdb_redis_node_commands_processed_total", "node")
    nodes = [
        Node(
            node=labels["node"],
            role=labels.get("role", ""),
            shard=labels.get("shard", ""),
            up=up.get(labels["node"], 0.0) > 0,
            memory_bytes=memory.get(labels["node"]),
            ops_per_s=ops.get(labels["node"]),
            clients=clients.get(labels["node"]),
            commands_processed=processed.get(labels["node"]),
        )
        for labels, _ in samples.get("mdb_redis_cluster_node_info")
    ]
    # Shard by shard, the primary first.
    nodes.sort(key=lambda n: (n.shard, n.role != "primary", n.node))
    return Cluster(shards=int(samples.total("mdb_redis_cluster_shards")), nodes=nodes)


def _redis_health(samples: Samples) -> RedisHealth:
    outcomes = samples.by("mdb_redis_retried_operations_total", "outcome")
    return RedisHealth(
        command_errors=samples.total("mdb_redis_command_errors_total"),
        retries=samples.total("mdb_redis_retries_total"),
        retries_recovered=outcomes.get("recovered", 0.0),
        retries_exhausted=outcomes.get("exhausted", 0.0),
        redirections=samples.total("mdb_redis_redirections_total"),
        pool_exhausted=samples.total("mdb_redis_pool_exhausted_total"),
        failovers_noticed=samples.total("mdb_redis_failovers_noticed_total"),
    )


def _streams(samples: Samples) -> list[Stream]:
    lengths = samples.by("mdb_stream_length", "stream")
    per_group = {
        name: samples.by_two(name, "stream", "group")
        for name in (
            "mdb_stream_group_lag",
            "mdb_stream_group_pending",
            "mdb_stream_group_oldest_pending_age_seconds",
            "mdb_stream_group_consumers",
        )
    }
    streams = []
    for stream, length in lengths.items():
        lag = per_group["mdb_stream_group_lag"].get(stream, {})
        pending = per_group["mdb_stream_group_pending"].get(stream, {})
        age = per_group["mdb_stream_group_oldest_pending_age_seconds"].get(stream, {})
        consumers = per_group["mdb_stream_group_consumers"].get(stream, {})
        groups = [
            Group(
                group=group,
                lag=lag[group],
                pending=pending.get(group, 0.0),
                oldest_pending_age_s=age.get(group, 0.0),
                consumers=consumers.get(group, 0.0),
            )
            for group in sorted(lag)
        ]
        streams.append(Stream(stream=stream, length=length, groups=groups))
    return streams


def _profile_events(streams: list[Stream]) -> Stream | None:
    """Return the profile event streams as one: ``profile:events`` alone, or with
    ``profiles.event_streams`` > 1 their sums (length, each group's lag, pending entries and
    consumers) and oldest pending age, named ``profile:events (+N)``."""
    found = [
        stream
        for stream in streams
        if stream.stream == PROFILE_STREAM or stream.stream.startswith(PROFILE_STREAM + ":")
    ]
    if len(found) <= 1:
        return found[0] if found else None
    groups: dict[str, Group] = {}
    for stream in found:
        for group in stream.groups:
            seen = groups.get(group.group)
            groups[group.group] = (
                group
                if seen is None
                else Group(
                    group=group.group,
                    lag=seen.lag + group.lag,
                    pending=seen.pending + group.pending,
                    oldest_pending_age_s=max(seen.oldest_pending_age_s, group.oldest_pending_age_s),
                    consumers=seen.consumers + group.consumers,
                )
            )
    return Stream(
        stream=f"{PROFILE_STREAM} (+{len(found) - 1})",
        length=sum(stream.length for stream in found),
        groups=[groups[name] for name in sorted(groups)],
    )


async def _overview(
    context: Context, kind: Literal["queue", "topic"], *, offset: int, limit: int
) -> messaging.ChannelPage | None:
    """Return a page of queues or topics, or None (logged) when they cannot be read, or when
    the process does not run the messaging service (its user may read no other's queues)."""
    if not _runs(context, "messaging"):
        return None
    try:
        return await messaging.channel_overview(
            context.of("messaging"), kind=kind, offset=offset, limit=limit
        )
    except Exception as exc:  # the rest of the dashboard still answers
        logger.warning("dashboard: reading the %ss failed: %s", kind, describe(exc))
        return None


async def _queues(
    context: Context, samples: Samples, *, offset: int, limit: int
) -> QueuePage | None:
    page = await _overview(context, "queue", offset=offset, limit=limit)
    if page is None:
        return None
    events = samples.by_two("mdb_queue_events_total", "queue", "event")
    return QueuePage(
        known=page.total,
        read=page.read,
        offset=offset,
        limit=limit,
        events=samples.by("mdb_queue_events_total", "event"),
        items=[
            Queue(
                name=row.name,
                ready=row.ready,
                delayed=row.delayed,
                in_flight=row.inflight,
                dead=row.dead,
                oldest_ready_age_s=row.oldest_age_s,
                events=events.get(row.name, {}),
            )
            for row in page.rows
        ],
    )


async def _topics(
    context: Context, samples: Samples, *, offset: int, limit: int
) -> TopicPage | None:
    page = await _overview(context, "topic", offset=offset, limit=limit)
    if page is None:
        return None
    events = samples.by_two("mdb_topic_events_total", "topic", "event")
    return TopicPage(
        known=page.total,
        read=page.read,
        offset=offset,
        limit=limit,
        events=samples.by("mdb_topic_events_total", "event"),
        items=[
            Topic(
                name=row.name,
                length=row.length,
                lag=row.lag,
                pending=row.pending,
                oldest_pending_age_s=row.oldest_age_s,
                groups=[
                    Group(
                        group=group.name,
                        lag=group.lag,
                        pending=group.pending,
                        oldest_pending_age_s=group.oldest_pending_age_s,
                        consumers=group.consumers,
                    )
                    for group in row.groups
                ],
                events=events.get(row.name, {}),
            )
            for row in page.rows
        ],
    )


def _api(samples: Samples) -> Api:
    requests: dict[str, float] = defaultdict(float)
    routes: dict[tuple[str, str], RouteCounts] = {}
    for labels, value in samples.get("mdb_http_requests_total"):
        if labels["route"] in OWN_ROUTES:
            continue
        requests[labels["status"]] += value
        key = (labels["method"], labels["route"])
        counts = routes.setdefault(
            key, RouteCounts(method=key[0], route=key[1], requests=0, errors=0, seconds=0)
        )
        counts.requests += value
        if labels["status"] == "5xx":
            counts.errors += value
    for labels, value in samples.get("mdb_http_request_duration_seconds_sum"):
        key = (labels["method"], labels["route"])
        if key in routes:
            routes[key].seconds += value
    buckets: dict[float, float] = defaultdict(float)
    for labels, value in samples.get("mdb_http_request_duration_seconds_bucket"):
        if labels["route"] not in OWN_ROUTES:
            buckets[float(labels["le"])] += value
    return Api(
        requests=dict(requests),
        in_progress=samples.total("mdb_http_requests_in_progress"),
        buckets=[(None if le == float("inf") else le, n) for le, n in sorted(buckets.items())],
        routes=sorted(routes.values(), key=lambda r: (-r.requests, r.route, r.method)),
    )


def _runs(context: Context, service: str) -> bool:
    return any(domain.name == service for domain in context.domains)


# The most-read profiles of each app, read at most once per state refresh like the metrics.
_top_cache: weakref.WeakKeyDictionary[StateCache, tuple[float, list[ProfileReads] | None]] = (
    weakref.WeakKeyDictionary()
)


async def _top_profiles(state: StateCache) -> list[ProfileReads] | None:
    cached = _top_cache.get(state)
    if cached is not None and time.monotonic() - cached[0] < state.max_age_s:
        return cached[1]
    # Read as the reporting service reads them, with the store (and user) of a service that
    # may: none when the process runs neither.
    reader = next((name for name in ("reporting", "profiles") if _runs(state.context, name)), "")
    if not reader:
        return None
    try:
        top = [
            ProfileReads(user=stat.user, reads=stat.score)
            for stat in await top_profiles(
                store=state.context.of(reader).store,
                n=TOP_PROFILES,
                streams=state.context.settings.profiles.event_streams,
            )
        ]
    except Exception as exc:  # the rest of the dashboard still answers
        logger.warning("dashboard: reading the top profiles failed: %s", describe(exc))
        top = None
    _top_cache[state] = (time.monotonic(), top)
    return top
