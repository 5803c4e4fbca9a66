"""The redis-py internals replica reads rely on (app.redis_internals), pinned: READONLY on the
connections of the reader nodes of a ``ClusterClient(readonly_connections=True)`` and on no
other, with redis-py's routing left on primaries, and a shard's replicas read from the client's
slot table.

If a redis-py upgrade fails here, read the named part of the new redis-py, adapt
app/redis_internals.py, then the pin below and the bound on redis in pyproject.toml. A small
fake server stands in for Redis.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import hiredis
import pytest
import redis
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster

from app import redis_internals
from app.redis_internals import ClusterClient

GET = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


def test_the_connect_hook_and_the_keyword_arguments_are_there() -> None:
    where = f"redis-py {redis.__version__}"
    assert inspect.iscoroutinefunction(RedisCluster.on_connect), f"{where}: on_connect changed"
    assert list(inspect.signature(RedisCluster.on_connect).parameters) == ["self", "connection"]
    for name in ("connection_kwargs", "startup_nodes", "slots_cache"):
        assert name in NodesManager.__slots__, f"{where}: NodesManager.{name} is gone"


@dataclass
class FakeServer:
    """Answers READONLY and anything else with +OK, GET k with k; records what it was sent."""

    port: int = 0
    commands: list[list[bytes]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                if command[0].upper() == b"GET":
                    writer.write(b"$%d\r\n%b\r\n" % (len(command[1]), command[1]))
                else:
                    writer.write(b"+OK\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    listening = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield fake


async def first_commands(node: ClusterNode) -> None:
    """Send GET k on a new connection of ``node`` and read its reply."""
    connection = redis_internals.acquire(node)
    try:
        await redis_internals.send_packed(connection, GET)
        assert await redis_internals.read_reply(node, connection, "GET") == "k"
    finally:
        redis_internals.release(node, connection)
        await node.disconnect()


@pytest.mark.parametrize("readonly", [True, False])
async def test_only_the_replica_readers_connections_say_readonly(
    server: FakeServer, readonly: bool
) -> None:
    client = ClusterClient(
        "127.0.0.1",
        server.port,
        protocol=2,
        driver_info=None,
        decode_responses=True,
        readonly_connections=readonly,
    )
    try:
        # The client's own routing stays on primaries.
        assert client.read_from_replicas is False
        assert client.load_balancing_strategy is None
        manager = client.nodes_manager
        # A start-up node and a node made afterwards, as the topology discovery, a MOVED or an
        # ASK makes them: their connections never say READONLY (after a failover such a node
        # may be a replica, which must answer MOVED to reads meant for the primary).
        later = ClusterNode("127.0.0.1", server.port, **manager.connection_kwargs)
        for node in (*manager.startup_nodes.values(), later):
            server.commands.clear()
            await first_commands(node)
            assert server.commands == [[b"GET", b"k"]]
        # The node that carries replica reads to that address: READONLY first.
        reader = client.reader(later)
        assert reader is client.reader(later)
        assert reader != later
        assert later != reader
        assert len({reader, later}) == 2  # the automatic pipeline keeps their batches apart
        server.commands.clear()
        await first_commands(reader)
        assert server.commands == [[b"READONLY"], [b"GET", b"k"]]
    finally:
        await client.aclose()


async def test_a_shard_s_replicas_come_from_the_slot_table() -> None:
    client = ClusterClient("127.0.0.1", 1, protocol=2)
    try:
        primary, first, second = (ClusterNode("127.0.0.1", port) for port in (1, 2, 3))
        slot = client.keyslot("k")
        client.nodes_manager.slots_cache = {slot: [primary, first, second]}
        assert redis_internals.replicas(client, "k") == [first, second]
        client.readonly_connections = True
        readers = redis_internals.replicas(client, "k")
        assert readers == [client.reader(first), client.reader(second)]
        assert [(node.host, node.port) for node in readers] == [("127.0.0.1", 2), ("127.0.0.1", 3)]
        client.readonly_connections = False
        client.nodes_manager.slots_cache = {slot: [primary]}
        assert redis_internals.replicas(client, "k") == []
        client.nodes_manager.slots_cache = {}
        assert redis_internals.replicas(client, "k") == []
    finally:
        await client.aclose()
