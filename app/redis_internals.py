"""The parts of redis-py below its public API that the automatic pipeline (and the metrics'
view of the cluster's shards) rely on.

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
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection

__all__ = [
    "ClusterNode",
    "Connection",
    "acquire",
    "drop",
    "read_reply",
    "ready",
    "release",
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
