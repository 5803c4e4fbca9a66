"""Appending to Redis streams, with concurrent appends to one stream sent together.

A request that emits an event waits until its entry is stored (and, with ``appendfsync
always``, on disk) before it answers, so every answered operation is in the stream. Sending
each entry alone costs one round trip and one client-side command each; under load many
requests emit at the same moment. ``StreamWriter`` keeps at most one append in flight per
stream and sends everything that arrived meanwhile as one script call (a group commit): each
caller still gets its own entry id only once that entry is stored, entries keep their arrival
order, a failure reaches every caller of the batch, and a batch sent twice (a re-send after a
lost reply) is stored once.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import ServiceUnavailable
from app.scripting import LuaScript, as_str_list
from app.slots import same_slot_key

if TYPE_CHECKING:
    from app.redis import RedisStore

APPEND_MANY = LuaScript.load(Path(__file__).with_name("stream_append.lua"))
# Entries per script call; a larger backlog is sent in several calls, one after the other.
MAX_BATCH = 256
# How long a batch is remembered, so that sending it again after a lost reply appends nothing:
# well beyond the time the retries of one batch can take (the retry policy's pauses plus each
# attempt's socket timeouts), and short enough to keep the markers (one small key per batch,
# not per entry) few.
BATCH_MARKER_TTL_S = 300

Pending = tuple[dict[str, str], "asyncio.Future[str]"]


class StreamWriter:
    """Append entries to streams, coalescing concurrent appends per stream."""

    def __init__(self, store: RedisStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self.calls = 0
        self._closed = False
        self._pending: dict[str, list[Pending]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def append(self, stream: str, fields: dict[str, str]) -> str:
        """Append one entry; return its id once it is stored."""
        if self._closed:
            raise ServiceUnavailable("The service is shutting down; retry on another instance")
        if not fields:
            # XADD needs a field; one bad entry must not fail the others in its batch.
            raise ValueError("a stream entry needs at least one field")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(stream, []).append((fields, future))
        if stream not in self._flushers:
            flusher = asyncio.create_task(self._flush(stream), name=f"stream-writer:{stream}")
            flusher.add_done_callback(partial(self._flusher_done, stream))
            self._flushers[stream] = flusher
        return await future

    async def aclose(self) -> None:
        """Refuse new appends and wait until every accepted one is stored or has failed."""
        self._closed = True
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)

    async def _flush(self, stream: str) -> None:
        batch: list[Pending] = []
        try:
            while batch := self._take(stream):
                try:
                    ids = await self._send(stream, batch)
                    for (_fields, future), entry_id in zip(batch, ids, strict=True):
                        if not future.done():  # a caller that gave up (client gone) is skipped
                            future.set_result(entry_id)
                except Exception as exc:  # every caller of the batch gets it
                    for _fields, future in batch:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            # Only a cancelled flush leaves callers here: nothing will send their entries now.
            for _fields, future in batch + self._pending.pop(stream, []):
                if not future.done():
                    future.cancel()
            del self._flushers[stream]

    def _flusher_done(self, stream: str, flusher: asyncio.Task[None]) -> None:
        # A flusher cancelled before it ever ran skipped its own clean-up in _flush.
        if self._flushers.get(stream) is flusher:
            del self._flushers[stream]
            for _fields, future in self._pending.pop(stream, []):
                future.cancel()

    def _take(self, stream: str) -> list[Pending]:
        waiting = self._pending.pop(stream, [])
        if len(waiting) > self.max_batch:
            self._pending[stream] = waiting[self.max_batch :]
        return waiting[: self.max_batch]

    async def _send(self, stream: str, batch: list[Pending]) -> list[str]:
        args = [str(BATCH_MARKER_TTL_S)]
        for fields, _future in batch:
            args.append(str(len(fields)))
            for name, value in fields.items():
                args.extend((name, value))
        self.calls += 1
        marker = same_slot_key(stream, f":append-batch:{uuid.uuid4().hex}")
        reply = await APPEND_MANY(
            self.store, keys=[stream, marker], args=args, what=f"append to {stream}"
        )
        return as_str_list(reply)
