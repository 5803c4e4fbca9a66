"""What an operator watches of the queues and topics: read at scrape time, bounded in cost.

One read finds the channels in their registries (``keys.QUEUE_REGISTRY``, ``TOPIC_REGISTRY``:
no SCAN), reads at most ``metrics.max_channels`` of them (the earliest registered; queues and
topics share the budget, neither getting less than half unless the other needs less), and is
kept for ``metrics.state_cache_s`` per store: the ``/metrics`` gauges and the dashboard's pages
(``channel_overview``) share it. Every queue is read with one script call and every topic
with a few commands, all issued at once, so the automatic pipeline sends them in one batch per
node and round.

A queue's read runs its housekeeping first, as every step that reads a queue does: due delayed
messages become ready and expired leases end, so the counts say what a receiver would find,
and leases that ran out with no consumer polling are counted as expired by the scrape.

The metrics give the ``metrics.channel_series`` deepest queues (ready + delayed + in flight +
dead) and topics (lag + pending over their groups) series of their own; the others are summed
under ``queue="_other"`` and ``stream="_other", group="_other"`` (their ages: the largest).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from app.domain import Context
from app.messaging import keys
from app.messaging.broker import Broker
from app.messaging.exceptions import QueueNotFound
from app.messaging.queues import QueueGauge
from app.messaging.topics import read_holds
from app.metrics import OTHER
from app.redis import RedisStore, describe
from app.stream_gauges import StreamGauges

ChannelKind = Literal["queue", "topic"]
logger = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_STATES = ("ready", "delayed", "inflight", "dead")
# One channel's read may take this long; a channel on a shard in trouble is left out of this
# refresh (counted in mdb_channels_read) instead of taking every channel's gauges with it.
CHANNEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class GroupRow:
    """One consumer group of a topic, as read."""

    name: str
    lag: int
    pending: int
    consumers: int
    oldest_pending_age_s: float


@dataclass(frozen=True)
class ChannelRow:
    """A queue's or a topic's state; the fields of the other kind are 0."""

    kind: ChannelKind
    name: str
    ready: int = 0
    delayed: int = 0
    inflight: int = 0
    dead: int = 0
    length: int = 0
    lag: int = 0
    pending: int = 0
    # A queue's oldest ready message, a topic's oldest pending entry (over its groups).
    oldest_age_s: float = 0.0
    groups: tuple[GroupRow, ...] = ()

    @property
    def depth(self) -> int:
        """Return what ranks the channel: its messages (a queue), its lag and pending (a topic)."""
        if self.kind == "queue":
            return self.ready + self.delayed + self.inflight + self.dead
        return self.lag + self.pending


@dataclass(frozen=True)
class ChannelPage:
    """A page of one kind's channels, deepest first."""

    total: int
    rows: list[ChannelRow]
    # How many of that kind the read covered (``total`` beyond ``metrics.max_channels``).
    read: int = 0


@dataclass(frozen=True)
class Snapshot:
    """One read of the registries and of the channels it covered, each kind deepest first."""

    queues: list[ChannelRow]
    topics: list[ChannelRow]
    registered: dict[ChannelKind, int]


@dataclass
class _Cached:
    snapshot: Snapshot | None = None
    read_at: float = -float("inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_CACHE: weakref.WeakKeyDictionary[RedisStore, _Cached] = weakref.WeakKeyDictionary()


async def snapshot(context: Context) -> Snapshot:
    """Return the channels' state, read again when older than ``metrics.state_cache_s``."""
    max_age_s = context.settings.metrics.state_cache_s
    cached = _CACHE.setdefault(context.store, _Cached())
    if cached.snapshot is not None and time.monotonic() - cached.read_at < max_age_s:
        return cached.snapshot
    async with cached.lock:  # concurrent callers share one read
        if cached.snapshot is None or time.monotonic() - cached.read_at >= max_age_s:
            cached.snapshot = await _read(context)
            cached.read_at = time.monotonic()
    return cached.snapshot


async def channel_overview(
    context: Context, *, kind: ChannelKind, offset: int = 0, limit: int = 20
) -> ChannelPage:
    """Return a page of the queues or topics, deepest first (from the cached read)."""
    found = await snapshot(context)
    rows = found.queues if kind == "queue" else found.topics
    page = rows[max(0, offset) : max(0, offset) + max(0, limit)]
    return ChannelPage(total=found.registered[kind], rows=page, read=len(rows))


async def gauges(context: Context) -> Sequence[Metric]:
    """Return the queue and topic gauges, the channels known and read (``Domain.gauges``)."""
    found = await snapshot(context)
    series = context.settings.metrics.channel_series
    channels = GaugeMetricFamily(
        "mdb_channels", "Queues and topics in the registry.", labels=["kind"]
    )
    read = GaugeMetricFamily(
        "mdb_channels_read",
        "Queues and topics read by the last refresh (metrics.max_channels at most).",
        labels=["kind"],
    )
    kinds: tuple[tuple[ChannelKind, list[ChannelRow]], ...] = (
        ("queue", found.queues),
        ("topic", found.topics),
    )
    for kind, rows in kinds:
        channels.add_metric([kind], float(found.registered[kind]))
        read.add_metric([kind], float(len(rows)))
    return [
        *_queue_families(found.queues, series),
        *_topic_families(found.topics, series),
        channels,
        read,
    ]


def _queue_families(rows: list[ChannelRow], series: int) -> list[Metric]:
    messages = GaugeMetricFamily(
        "mdb_queue_messages",
        "Messages of the queue by state: ready, delayed, inflight (leased), dead (dead letters).",
        labels=["queue", "state"],
    )
    oldest = GaugeMetricFamily(
        "mdb_queue_oldest_ready_age_seconds",
        "Age of the oldest ready message, from its id (at the ends of the line; 0 when none).",
        labels=["queue"],
    )
    own, others = rows[:series], rows[series:]
    for row in own:
        for state, count in zip(QUEUE_STATES, _states(row), strict=True):
            messages.add_metric([row.name, state], float(count))
        oldest.add_metric([row.name], row.oldest_age_s)
    if others:
        totals = [sum(column) for column in zip(*(_states(row) for row in others), strict=True)]
        for state, count in zip(QUEUE_STATES, totals, strict=True):
            messages.add_metric([OTHER, state], float(count))
        oldest.add_metric([OTHER], max(row.oldest_age_s for row in others))
    return [messages, oldest]


def _states(row: ChannelRow) -> tuple[int, int, int, int]:
    return (row.ready, row.delayed, row.inflight, row.dead)


def _topic_families(rows: list[ChannelRow], series: int) -> list[Metric]:
    families = StreamGauges()
    own, others = rows[:series], rows[series:]
    for row in own:
        stream = keys.topic_keys(row.name)[1]
        families.length.add_metric([stream], float(row.length))
        for group in row.groups:
            labels = [stream, group.name]
            families.lag.add_metric(labels, float(group.lag))
            families.pending.add_metric(labels, float(group.pending))
            families.consumers.add_metric(labels, float(group.consumers))
            families.oldest_pending_age.add_metric(labels, group.oldest_pending_age_s)
    if others:
        groups = [group for row in others for group in row.groups]
        families.length.add_metric([OTHER], float(sum(row.length for row in others)))
        if groups:
            labels = [OTHER, OTHER]
            families.lag.add_metric(labels, float(sum(g.lag for g in groups)))
            families.pending.add_metric(labels, float(sum(g.pending for g in groups)))
            families.consumers.add_metric(labels, float(sum(g.consumers for g in groups)))
            families.oldest_pending_age.add_metric(
                labels, max(g.oldest_pending_age_s for g in groups)
            )
    return families.families()


async def _read(context: Context) -> Snapshot:
    store = context.store
    budget = context.settings.metrics.max_channels
    registries = (keys.QUEUE_REGISTRY, keys.TOPIC_REGISTRY)
    queue_total, topic_total, queue_names, topic_names = await asyncio.gather(
        *(store.call(key, "ZCARD", key, what="metrics: count channels") for key in registries),
        *(_first_registered(store, key, budget) for key in registries),
    )
    # Each kind gets half the budget, and what the other kind leaves of its half.
    topic_share = min(len(topic_names), max(budget // 2, budget - len(queue_names)))
    queue_share = min(len(queue_names), budget - topic_share)
    broker = context.need(Broker)
    queues, topics = await asyncio.gather(
        _read_queues(broker, queue_names[:queue_share]),
        _read_topics(
            store, topic_names[:topic_share], max_groups=context.settings.metrics.channel_series
        ),
    )
    return Snapshot(
        queues=_deepest_first(queues),
        topics=_deepest_first(topics),
        registered={"queue": int(queue_total), "topic": int(topic_total)},
    )


async def _first_registered(store: RedisStore, registry: str, count: int) -> list[str]:
    if count <= 0:
        return []
    names: list[str] = await store.call(
        registry, "ZRANGE", registry, 0, count - 1, what="metrics: list channels"
    )
    return names


def _deepest_first(rows: list[ChannelRow]) -> list[ChannelRow]:
    return sorted(rows, key=lambda row: (-row.depth, row.name))


async def _read_queues(broker: Broker, names: list[str]) -> list[ChannelRow]:
    now_ms = time.time() * 1000
    read = await asyncio.gather(
        *(_bounded(broker.queue(name).gauge(now_ms=now_ms)) for name in names),
        return_exceptions=True,
    )
    _log_failures("queues", names, read)
    return [
        ChannelRow(
            kind="queue",
            name=name,
            ready=found.counts.ready,
            delayed=found.counts.delayed,
            inflight=found.counts.in_flight,
            dead=found.counts.dead_lettered,
            oldest_age_s=found.oldest_ready_age_s,
        )
        for name, found in zip(names, read, strict=True)
        # A queue registered whose keys were deleted by hand (QueueNotFound) shows nothing.
        if isinstance(found, QueueGauge)
    ]


async def _read_topics(store: RedisStore, names: list[str], *, max_groups: int) -> list[ChannelRow]:
    streams = [keys.topic_keys(name)[1] for name in names]
    read = [StreamGauges() for _ in names]

    async def read_topic(gauge: StreamGauges, name: str, stream: str) -> bool:
        held = await read_holds(store, name)
        return await gauge.read(store, stream, max_groups=max_groups, held=held)

    found = await asyncio.gather(
        *(
            _bounded(read_topic(gauge, name, stream))
            for gauge, name, stream in zip(read, names, streams, strict=True)
        ),
        return_exceptions=True,
    )
    _log_failures("topics", names, found)
    rows = []
    for gauge, name, exists in zip(read, names, found, strict=True):
        if exists is True:
            rows.append(_topic_row(name, gauge))
        elif exists is False:  # nobody published to it nor subscribed yet: no stream
            rows.append(ChannelRow(kind="topic", name=name))
    return rows


async def _bounded(read: Awaitable[T]) -> T:
    async with asyncio.timeout(CHANNEL_TIMEOUT_S):
        return await read


def _log_failures(kind: str, names: list[str], results: Sequence[object]) -> None:
    failed = [
        (name, result)
        for name, result in zip(names, results, strict=True)
        if isinstance(result, BaseException) and not isinstance(result, QueueNotFound)
    ]
    for _name, result in failed:
        if not isinstance(result, Exception):  # cancelled: the refresh itself is stopping
            raise result
    if failed:
        name, error = failed[0]
        logger.warning(
            "metrics: %d of %d %s could not be read (first: %s: %s)",
            len(failed),
            len(names),
            kind,
            name,
            describe(error),
        )


def _topic_row(name: str, gauge: StreamGauges) -> ChannelRow:
    """Return a topic's row from the samples its ``StreamGauges`` read."""
    by_group: dict[str, dict[str, float]] = {}
    for family, field_name in (
        (gauge.lag, "lag"),
        (gauge.pending, "pending"),
        (gauge.consumers, "consumers"),
        (gauge.oldest_pending_age, "oldest"),
    ):
        for sample in family.samples:
            by_group.setdefault(sample.labels["group"], {})[field_name] = sample.value
    groups = tuple(
        GroupRow(
            name=group,
            lag=int(values.get("lag", 0)),
            pending=int(values.get("pending", 0)),
            consumers=int(values.get("consumers", 0)),
            oldest_pending_age_s=values.get("oldest", 0.0),
        )
        for group, values in sorted(by_group.items())
    )
    length = sum(sample.value for sample in gauge.length.samples)
    return ChannelRow(
        kind="topic",
        name=name,
        length=int(length),
        lag=sum(group.lag for group in groups),
        pending=sum(group.pending for group in groups),
        oldest_age_s=max((group.oldest_pending_age_s for group in groups), default=0.0),
        groups=groups,
    )
