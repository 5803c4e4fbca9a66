"""The parts of redis-py below its public API that the automatic pipeline (and the metrics'
view of the cluster's shards, and the cluster client's following of ASK) rely on.

redis-py's asyncio cluster client offers no public way to write many commands to one node on one
of its pooled connections and read their replies in order, so ``app.autopipeline`` borrows a
connection from the node's pool as ``ClusterNode.execute_command`` does. Those methods are
undocumented and may change in any release, so every use of them is here, behind functions
named for what the pipeline needs: ``tests/unit/test_redis_internals.py`` fails, naming the
method, when an upgrade removes one or changes its signature, and ``pyproject.toml`` bounds
redis-py to the versions that test has passed on.

What the pipeline counts on, beyond the signatures:
- a node's pool hands out a connection at once or raises MaxConnectionsError (it never waits);
- ``release`` returns a connection to the pool (or reconnects it first, if it was marked for
  reconnection after a topology change);
- a connection whose write is interrupted (cancelled, timed out) is disconnected by redis-py, so
  nothing half-written is reused;
- ``read_reply`` reads exactly one reply and parses it as the client would (the node's response
  callbacks: HGETALL as a dict, and so on).

``ClusterClient`` mends one gap of redis-py's cluster client: it follows an ASK by looking the
node up by name in its nodes cache, where a primary added to the cluster is missing until a
MOVED names it (CLUSTER SLOTS, the topology it learns, lists only the nodes that serve slots, and
an ASK comes while the slot is still the old node's). The lookup answers None and the command
fails with AttributeError (``'NoneType' object has no attribute 'execute_command'``), the first
command of each slot moving to the new node. ``tests/test_resharding.py`` pins the fix.

Replica reads (``redis.read_from_replicas``) need two more things. A replica answers MOVED to a
connection that has not said READONLY; redis-py says it on every connection only when its own
replica routing is on (``read_from_replicas`` or ``load_balancing_strategy``), which also sends
every read command of its general path to replicas, where the workers' and the idempotency
checks' reads must not go. And a READONLY connection must carry nothing but replica reads: after
a failover the old primary, now a replica, still heads its slots in the client's slot table
until a MOVED patches them (``reinitialize_steps=0``), and a READONLY connection to it would
answer reads meant for the primary from the replica instead of saying MOVED. So
``ClusterClient(readonly_connections=True)`` keeps, for each replica the reads use, a node of its
own (``reader``: its own pool, redis-py's ``RedisCluster.on_connect`` as its connections'
connect hook, which says READONLY after the handshake), and leaves every other connection and
the routing alone. ``replicas`` hands out those nodes. ``tests/unit/test_replica_internals.py``
pins both.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.cluster import PRIMARY, REPLICA

__all__ = [
    "ClusterClient",
    "ClusterNode",
    "Connection",
    "acquire",
    "drop",
    "read_reply",
    "ready",
    "release",
    "replicas",
    "send_packed",
    "shards",
]


def acquire(node: ClusterNode) -> Connection:
    """Take a connection from ``node``'s pool; raise MaxConnectionsError if none is free."""
    return node.acquire_connection()


async def ready(node: ClusterNode, connection: Connection) -> None:
    """Reconnect ``connection`` first if a topology change marked it for reconnection."""
    await node.disconnect_if_needed(connection)


async def send_packed(connection: Connection, packed: bytes) -> None:
    """Write commands already encoded in the Redis protocol, connecting first if needed."""
    await connection.send_packed_command(packed)


async def read_reply(node: ClusterNode, connection: Connection, command_name: str) -> Any:
    """Read the next reply on ``connection`` and parse it as the client parses ``command_name``.

    An error reply is raised as its ResponseError.
    """
    return await node.parse_response(connection, command_name)


def release(node: ClusterNode, connection: Connection) -> None:
    """Give ``connection`` back to ``node``'s pool."""
    node.release(connection)


async def drop(connection: Connection) -> None:
    """Close ``connection`` at once, without waiting for the socket to close.

    It stays in its pool, which connects it again on its next use.
    """
    await connection.disconnect(nowait=True)


def shards(client: RedisCluster) -> list[tuple[ClusterNode, list[ClusterNode]]]:
    """Return each shard as the client's slot table has it: its primary and its replicas.

    (The metrics show the cluster's shape as the client routes to it; redis-py keeps that only
    in ``NodesManager.slots_cache``: slot -> [primary, *replicas].)
    """
    seen: dict[str, tuple[ClusterNode, list[ClusterNode]]] = {}
    for owners in client.nodes_manager.slots_cache.values():
        if owners and owners[0].name not in seen:
            seen[owners[0].name] = (owners[0], list(owners[1:]))
    return list(seen.values())


class ReaderNode(ClusterNode):
    """A node for replica reads alone. Equal only to itself: redis-py's nodes are equal by
    address, and this one must not share the automatic pipeline's batches of the client's node
    for the same address (whose connections do not say READONLY)."""

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


def replicas(client: RedisCluster, key: str) -> list[ClusterNode]:
    """Return the replicas of the shard serving ``key``'s slot, as the client's slot table has
    them (none when the slot is not covered): with ``readonly_connections``, as the nodes that
    carry replica reads to them."""
    owners = client.nodes_manager.slots_cache.get(client.keyslot(key))
    found = list(owners[1:]) if owners else []
    if isinstance(client, ClusterClient) and client.readonly_connections:
        return [client.reader(node) for node in found]
    return found


class ClusterClient(RedisCluster):
    """redis-py's asyncio cluster client, following an ASK to a primary it has not seen yet.

    ``readonly_connections``: replica reads get nodes of their own whose connections say
    READONLY (``reader``; see the module's docstring); every other connection and the routing
    stay redis-py's defaults, to primaries.
    """

    def __init__(self, *args: Any, readonly_connections: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readonly_connections = readonly_connections
        self._readers: dict[str, ClusterNode] = {}

    def reader(self, node: ClusterNode) -> ClusterNode:
        """Return the node that carries replica reads to ``node``: made on first use, with a
        pool whose connections say READONLY."""
        found = self._readers.get(node.name)
        if found is None:
            options = {
                **self.nodes_manager.connection_kwargs,
                "redis_connect_func": self.on_connect,
            }
            found = self._readers[node.name] = ReaderNode(node.host, node.port, REPLICA, **options)
        return found

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            readers, self._readers = list(self._readers.values()), {}
            await asyncio.gather(*(node.disconnect() for node in readers), return_exceptions=True)

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        """Return the node, adding one looked up by name that the cache lacks (as a primary).

        redis-py looks a node up by name alone to follow an ASK, whose node exists; nothing in
        this project looks nodes up by name otherwise.
        """
        node = super().get_node(host, port, node_name)
        if node is None and node_name is not None and host is None and port is None:
            node = add_primary(self, node_name)
        return node


def add_primary(client: RedisCluster, name: str) -> ClusterNode:
    """Add the primary ``host:port`` to the client's nodes cache, as redis-py adds the node a
    MOVED names (``NodesManager.move_slot``); return it."""
    host, _, port = name.rpartition(":")
    manager = client.nodes_manager
    node = ClusterNode(host, int(port), PRIMARY, **manager.connection_kwargs)
    manager.set_nodes(manager.nodes_cache, {node.name: node})
    return node
