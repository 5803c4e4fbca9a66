"""Appending to Redis streams, with concurrent appends to one stream sent together.

A request that emits an event waits until its entry is stored (and, with ``appendfsync
always``, on disk) before it answers, so every answered operation is in the stream. Sending
each entry alone costs one round trip and one client-side command each; under load many
requests emit at the same moment. ``StreamWriter`` keeps at most one append in flight per
stream and sends everything that arrived meanwhile as one script call (a group commit): each
caller still gets its own entry id only once that entry is stored, entries keep their arrival
order, and a failure reaches every caller of the batch.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from app.redis import RedisStore
from app.scripting import LuaScript

logger = logging.getLogger(__name__)

APPEND_MANY = LuaScript.load(Path(__file__).with_name("stream_append.lua"))
# Entries per script call; a larger backlog is sent in several calls, one after the other.
MAX_BATCH = 256

Pending = tuple[dict[str, str], "asyncio.Future[str]"]


class StreamWriter:
    """Append entries to streams, coalescing concurrent appends per stream."""

    def __init__(self, store: RedisStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self.calls = 0
        self._pending: dict[str, list[Pending]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def append(self, stream: str, fields: dict[str, str]) -> str:
        """Append one entry; return its id once it is stored."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(stream, []).append((fields, future))
        if stream not in self._flushers:
            self._flushers[stream] = asyncio.create_task(
                self._flush(stream), name=f"stream-writer:{stream}"
            )
        return await future

    async def aclose(self) -> None:
        """Wait for the appends already accepted to be stored."""
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)

    async def _flush(self, stream: str) -> None:
        try:
            while batch := self._take(stream):
                try:
                    ids = await self._send(stream, batch)
                except Exception as exc:  # every caller of the batch gets it
                    for _fields, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except asyncio.CancelledError:
                    for _fields, future in batch:
                        future.cancel()
                    raise
                for (_fields, future), entry_id in zip(batch, ids, strict=True):
                    if not future.done():  # a caller that gave up (client gone) is skipped
                        future.set_result(entry_id)
        finally:
            del self._flushers[stream]

    def _take(self, stream: str) -> list[Pending]:
        waiting = self._pending.get(stream, [])
        batch, self._pending[stream] = waiting[: self.max_batch], waiting[self.max_batch :]
        if not self._pending[stream]:
            del self._pending[stream]
        return batch

    async def _send(self, stream: str, batch: list[Pending]) -> list[str]:
        args: list[str] = []
        for fields, _future in batch:
            args.append(str(len(fields)))
            for name, value in fields.items():
                args.extend((name, value))
        self.calls += 1
        ids: list[str] = await APPEND_MANY(
            self.store, keys=[stream], args=args, what=f"append to {stream}"
        )
        return ids
