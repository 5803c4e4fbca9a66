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
import contextlib
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection
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
        """Send what is queued, then wait until every batch has its replies (or failed)."""
        for node in list(self._queued):
            self._dispatch(node)
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
        # Encoded one by one, so that a bad argument fails only its own caller; a command
        # whose caller already gave up is not sent at all.
        pieces: list[bytes] = []
        sent: list[Queued] = []
        for command, reply in batch:
            if reply.done():
                continue
            try:
                pieces.append(pack_command(command))
            except (DataError, UnicodeError) as exc:
                reply.set_exception(exc)
                continue
            sent.append((command, reply))
        if not sent:
            return
        connection = None
        answered = 0
        try:
            connection = node.acquire_connection()  # MaxConnectionsError reaches every caller
            await node.disconnect_if_needed(connection)
            async with asyncio.timeout(self.timeout_s):
                await connection.send_packed_command(b"".join(pieces))
                for command, reply in sent:
                    try:
                        result = await node.parse_response(connection, command_name(command))
                    except ResponseError as exc:  # this command's own error reply
                        result = exc
                    answered += 1
                    if reply.done():  # its caller stopped waiting
                        continue
                    if isinstance(result, ResponseError):
                        reply.set_exception(result)
                    else:
                        reply.set_result(result)
        except Exception as exc:
            await self._fail(connection, sent, answered, exc)
        except BaseException:  # cancelled (shutdown): nobody will answer these callers
            # (redis-py drops a connection whose write or read is interrupted.)
            for _command, reply in sent:
                reply.cancel()
            raise
        finally:
            if connection is not None:
                node.release(connection)

    @staticmethod
    async def _fail(
        connection: Connection | None, sent: list[Queued], answered: int, exc: Exception
    ) -> None:
        """Hand a failed batch's error to the commands still without a reply.

        The connection may still carry their replies (a reply that did not decode, a parsing
        callback that raised), so it is dropped: nothing read from it later can be a reply
        meant for someone else. The command being read gets the error; if the error is the
        command's own (not the connection's), the ones after it get a connection error, which
        their callers' retry policy handles as a dropped connection.
        """
        if connection is not None:
            with contextlib.suppress(Exception):  # the pool reconnects it on its next use
                await connection.disconnect(nowait=True)
        own_error = not isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError))
        for index, (_command, reply) in enumerate(sent[answered:]):
            if reply.done():
                continue
            if index == 0 or not own_error:
                reply.set_exception(exc)
            else:
                reply.set_exception(
                    rexc.ConnectionError(
                        f"connection dropped after another command failed: {exc!r}"
                    )
                )


def pack_command(command: tuple[EncodableT, ...]) -> bytes:
    """Encode one command in the Redis protocol (RESP).

    redis-py's own packer copies its growing buffer once per argument, which made packing the
    largest part of a batch's cost; this builds the pieces and joins them once. Arguments are
    encoded as redis-py encodes them: bytes as they are, text as UTF-8, numbers by ``repr``.
    """
    # A name of several words ("CLIENT SETNAME") is several arguments, as in redis-py.
    words = command_name(command).split()
    pieces = [b"*%d\r\n" % (len(words) + len(command) - 1)]
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
