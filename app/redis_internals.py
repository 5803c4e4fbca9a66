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
checks' reads must not go. ``ClusterClient(readonly_connections=True)`` installs redis-py's own
``RedisCluster.on_connect`` (READONLY after the handshake) as every connection's connect hook,
as redis-py installs it, and leaves the routing alone: reads go to a replica only when
``RedisStore.call`` sends them there, to a node from ``replicas``. A READONLY connection to a
primary behaves as any other. ``tests/unit/test_replica_internals.py`` pins both.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.cluster import PRIMARY

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


def replicas(client: RedisCluster, key: str) -> list[ClusterNode]:
    """Return the replicas of the shard serving ``key``'s slot, as the client's slot table has
    them (none when the slot is not covered)."""
    owners = client.nodes_manager.slots_cache.get(client.keyslot(key))
    return list(owners[1:]) if owners else []


class ClusterClient(RedisCluster):
    """redis-py's asyncio cluster client, following an ASK to a primary it has not seen yet.

    ``readonly_connections``: every connection it opens says READONLY (see the module's
    docstring); its routing stays redis-py's default, to primaries.
    """

    def __init__(self, *args: Any, readonly_connections: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if readonly_connections:
            # Where redis-py puts it for its own replica routing; the nodes made from now on
            # (discovered, or added by a MOVED or an ASK) copy the shared keyword arguments,
            # and the start-up nodes, made already, get it too, as redis-py's maintenance
            # notifications do (``_update_connection_kwargs_for_maint_notifications``).
            hook = {"redis_connect_func": self.on_connect}
            self.nodes_manager.connection_kwargs.update(hook)
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_kwargs.update(hook)

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
