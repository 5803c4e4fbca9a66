"""Values read from Redis for the metrics and the dashboard, at most once per few seconds.

A scrape asks every domain for its gauges (queue depths, stream lag, active sessions...) and
reads the cluster's shape and each node's INFO. Only the process that answers the scrape reads
them, once per ``metrics.state_cache_s`` whatever the number of scrapers and dashboards, so
their cost does not grow with the HTTP processes and a value is never summed across them.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import platform
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import redis
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio.cluster import ClusterNode, RedisCluster

from app import redis_internals
from app.domain import Context
from app.metrics import REDIS_FAILOVERS
from app.redis import RedisClient, describe

logger = logging.getLogger(__name__)

VERSION = importlib.metadata.version("memorydb-microservices")
# One node's INFO may take this long before the node counts as down for this refresh.
NODE_TIMEOUT_S = 1.0


class StateCache:
    """The last values read from Redis, refreshed when older than ``max_age_s``."""

    def __init__(self, context: Context, *, max_age_s: float) -> None:
        self.context = context
        self.max_age_s = max_age_s
        self._families: list[Metric] = []
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._primaries: set[str] = set()

    async def families(self) -> list[Metric]:
        """Return the state's metric families, reading Redis again if they are stale."""
        if time.monotonic() - self._read_at < self.max_age_s:
            return self._families
        async with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at >= self.max_age_s:
                self._families = await self._read()
                self._read_at = time.monotonic()
        return self._families

    def collector(self, families: Sequence[Metric]) -> Collector:
        """Return a collector that yields ``families`` plus the state's age."""
        age = GaugeMetricFamily(
            "mdb_metrics_state_age_seconds",
            "How old the values read from Redis are (metrics.state_cache_s at most).",
            value=max(0.0, time.monotonic() - self._read_at),
        )
        return _Fixed([*families, age])

    async def _read(self) -> list[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(
            "mdb_metrics_state_up",
            "Whether the last refresh read a source (a domain or the cluster) without error.",
            labels=["source"],
        )
        found: list[Metric] = [_build_info()]
        sources: list[tuple[str, Callable[[], Awaitable[Sequence[Metric]]]]] = [
            ("cluster", self._cluster)
        ]
        for domain in self.context.domains:
            if domain.gauges is not None:
                own = self.context.of(domain.name)
                sources.append((domain.name, functools.partial(domain.gauges, own)))
        timeout_s = self.context.settings.redis.socket_timeout_s
        results = await asyncio.gather(
            *(_bounded(read, timeout_s) for _, read in sources), return_exceptions=True
        )
        for (name, _), result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("metrics: reading %s failed: %s", name, describe(result))
                up.add_metric([name], 0.0)
                continue
            up.add_metric([name], 1.0)
            found.extend(result)
        refresh = GaugeMetricFamily(
            "mdb_metrics_state_refresh_seconds",
            "How long the last read of the values from Redis took.",
            value=time.perf_counter() - started,
        )
        return [*_merged(found), up, refresh]

    async def _cluster(self) -> list[Metric]:
        """Read the shape and nodes of every cluster the process's services use."""
        nodes = GaugeMetricFamily(
            "mdb_redis_cluster_node_info",
            "The nodes as the client sees them (1 each): role, and the shard's primary.",
            labels=["node", "role", "shard"],
        )
        shards = GaugeMetricFamily(
            "mdb_redis_cluster_shards",
            "Shards (primaries serving slots) the client knows, over every cluster it uses.",
        )
        # Each cluster once, whatever the number of users the services connect with.
        clients: dict[frozenset[str], RedisClient] = {}
        for store in self.context.stores():
            clients.setdefault(frozenset(_node_names(store.client)), store.client)
        primaries: set[str] = set()
        reads: list[Awaitable[dict[str, object] | None]] = []
        names: list[str] = []
        for client in clients.values():
            if isinstance(client, RedisCluster):
                layout = redis_internals.shards(client)
                for primary, replicas in layout:
                    for node in (primary, *replicas):
                        # Clients of one cluster whose topologies differ for a moment (a node
                        # just added) still give each node one series.
                        if node.name in names:
                            continue
                        role = "primary" if node is primary else "replica"
                        nodes.add_metric([node.name, role, primary.name], 1.0)
                        reads.append(self._info(client, node))
                        names.append(node.name)
                    primaries.add(primary.name)
            else:
                (name,) = _node_names(client)
                if name in names:
                    continue
                primaries.add(name)
                nodes.add_metric([name, "primary", name], 1.0)
                reads.append(self._info(client, None))
                names.append(name)
        shards.add_metric([], float(len(primaries)))
        self._notice_failovers(primaries)
        infos = await asyncio.gather(*reads)
        return [shards, nodes, *_node_families(zip(names, infos, strict=True))]

    def _notice_failovers(self, primaries: set[str]) -> None:
        """Count the shards whose primary is a node that was not a primary at the last read."""
        if self._primaries and primaries != self._primaries:
            REDIS_FAILOVERS.inc(max(1, len(primaries - self._primaries)))
        self._primaries = primaries

    @staticmethod
    async def _info(client: RedisClient, node: ClusterNode | None) -> dict[str, object] | None:
        try:
            async with asyncio.timeout(NODE_TIMEOUT_S):
                if isinstance(client, RedisCluster):
                    info = await client.info(target_nodes=node)
                else:
                    info = await client.info()
        except Exception as exc:
            logger.warning(
                "metrics: INFO from %s failed: %s", node.name if node else "redis", describe(exc)
            )
            return None
        return dict(info)


def _node_names(client: RedisClient) -> list[str]:
    """Return the ``host:port`` of every node ``client`` knows (its one node, not a cluster)."""
    if isinstance(client, RedisCluster):
        return [node.name for node in client.get_nodes()]
    kwargs = client.connection_pool.connection_kwargs
    return [f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"]


def _node_families(nodes: Iterable[tuple[str, dict[str, object] | None]]) -> list[Metric]:
    up = GaugeMetricFamily("mdb_redis_node_up", "Whether the node answered INFO.", labels=["node"])
    memory = GaugeMetricFamily(
        "mdb_redis_node_memory_used_bytes", "The node's used_memory.", labels=["node"]
    )
    ops = GaugeMetricFamily(
        "mdb_redis_node_ops_per_second",
        "Commands per second the node reports (instantaneous_ops_per_sec).",
        labels=["node"],
    )
    processed = CounterMetricFamily(
        "mdb_redis_node_commands_processed",
        "Commands the node processed since it started (total_commands_processed).",
        labels=["node"],
    )
    clients = GaugeMetricFamily(
        "mdb_redis_node_connected_clients", "Client connections to the node.", labels=["node"]
    )
    for name, info in nodes:
        up.add_metric([name], 0.0 if info is None else 1.0)
        if info is None:
            continue
        for family, field in (
            (memory, "used_memory"),
            (ops, "instantaneous_ops_per_sec"),
            (processed, "total_commands_processed"),
            (clients, "connected_clients"),
        ):
            value = info.get(field)
            if isinstance(value, int | float):
                family.add_metric([name], float(value))
    return [up, memory, ops, processed, clients]


def _build_info() -> Metric:
    info = GaugeMetricFamily(
        "mdb_build_info",
        "The service's version and what it runs on (1).",
        labels=["version", "python", "redis_py"],
    )
    info.add_metric([VERSION, platform.python_version(), redis.__version__], 1.0)
    return info


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """Return the families with those of one name (from several domains) as one."""
    by_name: dict[str, Metric] = {}
    for family in families:
        known = by_name.get(family.name)
        if known is None:
            by_name[family.name] = family
        else:
            known.samples.extend(family.samples)
    return list(by_name.values())


async def _bounded(
    read: Callable[[], Awaitable[Sequence[Metric]]], timeout_s: float
) -> Sequence[Metric]:
    async with asyncio.timeout(timeout_s):
        return await read()


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
