"""Sending the commands that concurrent requests address to one cluster node as one pipeline.

Under load many requests reach Redis in the same turn of the event loop: each one alone costs
a socket write, a wake-up for its reply and a pooled connection, on both sides (in the service
and on the Redis nodes, where the sockets take much of the CPU; docs/benchmarks.md has the
figures). ``AutoPipeline`` collects the single-slot commands issued during one turn of the loop
per node and sends them at the start of the next turn, as one write on one connection, reading
the replies in order. The redis-py internals it needs for that are in ``app.redis_internals``.
A command that merges callers of its turn already (a queue's or a topic's coalesced step) is
sent at once from its caller's task (``send_now``): the first such to a node in a turn, the
others with the turn's batch.

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
import functools
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis import exceptions as rexc
from redis.exceptions import DataError, ResponseError
from redis.typing import EncodableT

from app import redis_internals
from app.metrics import REDIS_PIPELINE_BATCH, HistogramTally
from app.redis_internals import ClusterNode, Connection

# Commands per write; a turn with more starts another batch, so one huge turn does not make
# the first caller wait for thousands of replies.
MAX_BATCH = 256

# Commands per batch, tallied (app.metrics).
_BATCH_SIZES = HistogramTally(REDIS_PIPELINE_BATCH)

Queued = tuple[tuple[EncodableT, ...], "asyncio.Future[Any]"]

# hiredis's stub declares a one-element tuple and no return type; it takes any number of
# arguments and returns bytes.
_hiredis_pack = cast(
    Callable[[tuple[str | int | float | bytes | memoryview, ...]], bytes], hiredis.pack_command
)


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
        # Commands sent at once (``send_now``): done when they have their replies (or failed);
        # and the nodes one went to in this turn of the loop.
        self._sent_now: set[asyncio.Future[None]] = set()
        self._now_this_turn: set[ClusterNode] = set()

    def send(self, node: ClusterNode, command: tuple[EncodableT, ...]) -> asyncio.Future[Any]:
        """Queue ``command`` for ``node``; the returned future gets its reply or error."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        queued = self._queued.get(node)
        if queued is None:
            queued = self._queued[node] = [(command, reply)]
            # Its first step runs after the callbacks ready now: their commands join it.
            task = loop.create_task(self._send(node, queued))
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._finished, node, queued))
        else:
            queued.append((command, reply))
        if len(queued) >= self.max_batch:
            self._close(node, queued)  # full: the next command starts another batch
        return reply

    async def send_now(self, node: ClusterNode, command: tuple[EncodableT, ...]) -> Any:
        """Send ``command`` to ``node`` at once, from this task, and return its reply.

        For a command that already carries the callers of its turn (a coalesced step of a
        queue or a topic): waiting a turn for others, in a task of its own, would cost two
        turns of the event loop and find none. Only the first such command to a node in a turn
        goes at once; the others of the turn (other channels' steps), and one that finds a
        batch queued for its node, go with the batch as ``send`` sends them: one write for
        the turn's commands to a node, as before. A caller cancelled while it reads its reply
        drops the connection (redis-py does), so this is for tasks that are seldom cancelled.
        """
        loop = asyncio.get_running_loop()
        if node in self._queued or node in self._now_this_turn:
            return await self.send(node, command)
        self._now_this_turn.add(node)
        loop.call_soon(self._now_this_turn.discard, node)
        reply: asyncio.Future[Any] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()
        self._sent_now.add(finished)
        try:
            await self._send(node, [(command, reply)])
        finally:
            self._sent_now.discard(finished)
            finished.set_result(None)
        return reply.result()

    async def aclose(self) -> None:
        """Wait until every command, the queued ones too, has its reply (or failed)."""
        while self._in_flight or self._sent_now:
            await asyncio.gather(*self._in_flight, *self._sent_now, return_exceptions=True)

    def _close(self, node: ClusterNode, batch: list[Queued]) -> None:
        if self._queued.get(node) is batch:
            del self._queued[node]

    def _finished(self, node: ClusterNode, batch: list[Queued], task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        # Cancelled before its first step (the loop closing), or failed outside the batch's
        # own error handling: no caller waits forever.
        self._close(node, batch)
        error = None if task.cancelled() else task.exception()
        for _command, reply in batch:
            if reply.done():
                continue
            if error is None:
                reply.cancel()
            else:
                reply.set_exception(error)

    async def _send(self, node: ClusterNode, batch: list[Queued]) -> None:
        self._close(node, batch)  # later commands make the next batch
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
        self.batches += 1
        self.commands += len(sent)
        _BATCH_SIZES.observe(len(sent))
        connection = None
        answered = 0
        try:
            connection = redis_internals.acquire(node)  # MaxConnectionsError reaches every caller
            await redis_internals.ready(node, connection)
            async with asyncio.timeout(self.timeout_s):
                await redis_internals.send_packed(connection, b"".join(pieces))
                for command, reply in sent:
                    try:
                        result = await redis_internals.read_reply(
                            node, connection, command_name(command)
                        )
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
                redis_internals.release(node, connection)

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
                await redis_internals.drop(connection)
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
    """Encode one command in the Redis protocol (RESP) with hiredis, as redis-py does.

    As in redis-py's ``HiredisRespSerializer``: a name of several words ("CLIENT SETNAME") is
    several arguments, bytearray and memoryview arguments are sent as bytes, and an argument
    hiredis cannot encode (bool, None...) is a DataError, so it fails only its own command.
    """
    name = command[0]
    if isinstance(name, str) and " " not in name:
        # As it is, when every argument is one hiredis takes (the usual case: a converted copy
        # costs a Python step per argument, and a settling step has hundreds).
        with contextlib.suppress(TypeError):  # a bytearray, or what hiredis refuses
            return _hiredis_pack(cast(tuple[str | int | float | bytes | memoryview, ...], command))
    words = command_name(command).split()
    args = (bytes(arg) if isinstance(arg, bytearray | memoryview) else arg for arg in command[1:])
    try:
        return _hiredis_pack((*words, *args))
    except TypeError as exc:
        raise DataError(str(exc)) from exc


def command_name(command: tuple[EncodableT, ...]) -> str:
    """Return the command's name, which picks redis-py's parser for its reply."""
    name = command[0]
    return name.decode() if isinstance(name, bytes) else str(name)
