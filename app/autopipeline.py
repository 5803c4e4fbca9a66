"""Sending the commands that concurrent requests address to one cluster node as one pipeline.

Under load many requests reach Redis in the same turn of the event loop: each one alone costs
a socket write, a wake-up for its reply and a pooled connection, on both sides (measured with
64 concurrent profile reads: about 25 us of the service's CPU for the write alone, and 200 us
of the Redis nodes' CPU per request, half of it spent on the sockets). ``AutoPipeline``
collects the single-slot commands issued during one turn of the loop per node and sends them
at the start of the next turn, as one write on one connection, reading the replies in order.

What each caller sees does not change:
- it gets its own reply, or its own error (a WRONGTYPE, NOSCRIPT or MOVED reply for one
  command fails only that command, which the caller handles as before);
- a failure of the connection fails every command of the batch that has no reply yet, with
  the connection error, which the caller's retry policy handles as for a command sent alone;
- a caller that stops waiting (cancelled, timed out) leaves the others' replies intact.

Batches to one node do not wait for each other: the next turn's batch goes out on another
connection while the previous one awaits its replies, so a command waits at most one turn of
the loop before it is sent. Commands that block on the server (BLPOP, XREAD BLOCK, WAIT) would
hold up every reply after them, so they never come here (``RedisStore.call`` says so).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.cluster import ClusterNode
from redis.exceptions import DataError, ResponseError
from redis.typing import EncodableT

# Commands per write; a turn with more starts another batch, so one huge turn does not make
# the first caller wait for thousands of replies.
MAX_BATCH = 256

Queued = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Coalesce the commands sent to each cluster node within one turn of the event loop."""

    def __init__(self, *, timeout_s: float, max_batch: int = MAX_BATCH) -> None:
        # How long a batch may wait for its replies before its connection is dropped; callers
        # time out on their own (RetryPolicy.timeout_s), this frees the connection.
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        # Counters for tests and diagnostics: how many batches carried how many commands.
        self.batches = 0
        self.commands = 0
        self._queued: dict[ClusterNode, list[Queued]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    def send(self, node: ClusterNode, command: tuple[EncodableT, ...]) -> asyncio.Future[Any]:
        """Queue ``command`` for ``node``; the returned future gets its reply or error."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        queued = self._queued.get(node)
        if queued is None:
            self._queued[node] = [(command, reply)]
            loop.call_soon(self._dispatch, node)
        else:
            queued.append((command, reply))
            if len(queued) >= self.max_batch:
                self._dispatch(node)
        return reply

    async def aclose(self) -> None:
        """Wait until every batch sent has its replies (or failed)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _dispatch(self, node: ClusterNode) -> None:
        batch = self._queued.pop(node, None)
        if not batch:  # already sent, by a full batch
            return
        task = asyncio.get_running_loop().create_task(self._send(node, batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, node: ClusterNode, batch: list[Queued]) -> None:
        self.batches += 1
        self.commands += len(batch)
        connection = node.acquire_connection()
        try:
            await node.disconnect_if_needed(connection)
            async with asyncio.timeout(self.timeout_s):
                await connection.send_packed_command(pack_commands(batch))
                for command, reply in batch:
                    try:
                        result = await node.parse_response(connection, command_name(command))
                    except ResponseError as exc:  # this command's own error reply
                        if not reply.done():
                            reply.set_exception(exc)
                        continue
                    if not reply.done():  # else its caller stopped waiting
                        reply.set_result(result)
        except Exception as exc:
            # The connection failed or the replies did not come in time: redis-py has dropped
            # the connection; every command still without a reply gets the error.
            for _command, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
        except BaseException:  # cancelled (shutdown): nobody will answer these callers
            for _command, reply in batch:
                reply.cancel()
            raise
        finally:
            node.release(connection)


def pack_commands(batch: list[Queued]) -> bytes:
    """Encode the batch's commands in the Redis protocol (RESP), as one buffer.

    redis-py's own packer copies its growing buffer once per argument, which made packing the
    largest part of a batch's cost; this builds the pieces and joins them once. Arguments are
    encoded as redis-py encodes them: bytes as they are, text as UTF-8, numbers by ``repr``.
    """
    pieces: list[bytes] = []
    for command, _reply in batch:
        # A name of several words ("CLIENT SETNAME") is several arguments, as in redis-py.
        words = command_name(command).split()
        pieces.append(b"*%d\r\n" % (len(words) + len(command) - 1))
        for arg in (*words, *command[1:]):
            data = arg.encode() if type(arg) is str else encode(arg)  # text is the common case
            pieces.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(pieces)


def command_name(command: tuple[EncodableT, ...]) -> str:
    """Return the command's name, which picks redis-py's parser for its reply."""
    name = command[0]
    return name.decode() if isinstance(name, bytes) else str(name)


def encode(arg: EncodableT) -> bytes:
    """Return one command argument as bytes; refuse what redis-py refuses (bool, None...)."""
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode()
    raise DataError(f"Invalid input of type: {type(arg).__name__!r}")
