"""The redis-py internals the automatic pipeline uses (app.redis_internals), pinned.

If a redis-py upgrade fails here, read the named method in the new redis-py, adapt
app/redis_internals.py if its meaning changed, then update the pin below and the bound on redis
in pyproject.toml. The behaviour is checked against a small fake server, so no redis-server is
needed.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import hiredis
import pytest
import redis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection

from app import redis_internals
from tests.conftest import PROJECT_ROOT

# What app.redis_internals calls, with the signature it was written against (annotations
# left out: only the parameters decide whether the calls still fit) and whether it is awaited.
PINNED = {
    (ClusterNode, "acquire_connection"): ("(self)", False),
    (ClusterNode, "disconnect_if_needed"): ("(self, connection)", True),
    (ClusterNode, "parse_response"): ("(self, connection, command, **kwargs)", True),
    (ClusterNode, "release"): ("(self, connection)", False),
    (Connection, "send_packed_command"): ("(self, command, check_health=True)", True),
    (Connection, "disconnect"): (
        "(self, nowait=False, error=None, failure_count=None, health_check_failed=False)",
        True,
    ),
}


def test_the_slot_table_the_metrics_read_is_there() -> None:
    from redis.asyncio.cluster import NodesManager

    assert "slots_cache" in NodesManager.__slots__, (
        f"redis-py {redis.__version__}: NodesManager.slots_cache is gone; "
        "app/redis_internals.py shards() reads it"
    )


def bare_signature(function: Any) -> str:
    signature = inspect.signature(function)
    parameters = [
        p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
    ]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize(
    ("owner", "name"), list(PINNED), ids=[f"{o.__name__}.{n}" for o, n in PINNED]
)
def test_the_methods_the_pipeline_calls_are_unchanged(owner: type, name: str) -> None:
    expected, awaited = PINNED[owner, name]
    where = f"redis-py {redis.__version__}: {owner.__name__}.{name}"
    method = getattr(owner, name, None)
    assert method is not None, f"{where} is gone; app/redis_internals.py calls it"
    found = bare_signature(method)
    assert found == expected, (
        f"{where} changed its signature from {expected} to {found}; "
        "check app/redis_internals.py against it"
    )
    assert inspect.iscoroutinefunction(method) == awaited, (
        f"{where} is {'no longer' if awaited else 'now'} a coroutine function; "
        "app/redis_internals.py must " + ("not await it" if awaited else "await it")
    )


def test_only_the_fence_module_calls_them() -> None:
    names = "|".join(name for _owner, name in PINNED if name not in {"release", "disconnect"})
    call = re.compile(rf"\.({names})\(|\.disconnect\(nowait")
    fence = PROJECT_ROOT / "app" / "redis_internals.py"
    sources = [*(PROJECT_ROOT / "app").rglob("*.py"), *(PROJECT_ROOT / "workers").rglob("*.py")]
    callers = sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in sources
        if path != fence and call.search(path.read_text())
    )
    assert callers == [], f"call redis-py internals through app.redis_internals: {callers}"


@dataclass
class FakeServer:
    """Answers RESP commands: GET k with k, HGETALL with a field list, FAIL with an error."""

    port: int = 0
    connections: int = 0
    commands: list[list[bytes]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                name = command[0].upper()
                if name != b"CLIENT":  # redis-py's own SETINFO on connecting
                    self.commands.append(command)
                if name == b"GET":
                    writer.write(b"$%d\r\n%b\r\n" % (len(command[1]), command[1]))
                elif name == b"HGETALL":
                    writer.write(b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n")
                elif name == b"FAIL":
                    writer.write(b"-ERR failed on purpose\r\n")
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


@pytest.fixture
async def node(server: FakeServer) -> AsyncIterator[ClusterNode]:
    def pairs(reply: list[str], **_options: Any) -> dict[str, str]:
        return dict(zip(reply[::2], reply[1::2], strict=True))

    opened = ClusterNode(
        "127.0.0.1",
        server.port,
        max_connections=2,
        protocol=2,
        decode_responses=True,
        response_callbacks={"HGETALL": pairs},
    )
    yield opened
    await opened.disconnect()


async def test_replies_are_read_in_order_and_parsed_as_the_client_parses_them(
    node: ClusterNode, server: FakeServer
) -> None:
    connection = redis_internals.acquire(node)
    await redis_internals.ready(node, connection)
    await redis_internals.send_packed(
        connection,
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nFAIL\r\n*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n",
    )

    assert await redis_internals.read_reply(node, connection, "GET") == "k"
    with pytest.raises(rexc.ResponseError, match="failed on purpose"):
        await redis_internals.read_reply(node, connection, "FAIL")
    assert await redis_internals.read_reply(node, connection, "HGETALL") == {"a": "1", "b": "2"}
    redis_internals.release(node, connection)
    assert server.commands == [[b"GET", b"k"], [b"FAIL"], [b"HGETALL", b"h"]]


async def test_the_pool_hands_back_released_connections_and_never_waits(node: ClusterNode) -> None:
    first = redis_internals.acquire(node)
    second = redis_internals.acquire(node)
    assert first is not second
    with pytest.raises(rexc.MaxConnectionsError):  # at once, no waiting for a free one
        redis_internals.acquire(node)
    redis_internals.release(node, first)
    assert redis_internals.acquire(node) is first
    redis_internals.release(node, first)
    redis_internals.release(node, second)


async def test_a_dropped_connection_reconnects_on_its_next_use(
    node: ClusterNode, server: FakeServer
) -> None:
    connection = redis_internals.acquire(node)
    await redis_internals.send_packed(connection, b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
    assert await redis_internals.read_reply(node, connection, "GET") == "a"

    await redis_internals.drop(connection)

    assert not connection.is_connected
    await redis_internals.send_packed(connection, b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
    assert await redis_internals.read_reply(node, connection, "GET") == "b"
    assert server.connections == 2
    redis_internals.release(node, connection)
