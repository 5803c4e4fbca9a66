"""Listing every record of a kind across the shards, in pages, without KEYS or SCAN.

SCAN cannot page through a cluster exactly once: its cursor belongs to one node's hash table (a
failover or resharding makes it meaningless) and it may return a key twice. ``SlotIndex`` keeps,
for each hash slot that holds records of its kind, a sorted set of their ids
(``<name>:index:<slot tag>``), in the slot of the records themselves, so the script that creates
or deletes a record updates the index in the same step. A registry (``<name>:slots``, a sorted set
of slot numbers) lists the slots that have ever held a record, so a page skips empty slots; a slot
is registered before its first record is created, and never unregistered.

A page walks the slots in order and each slot's ids in byte order; the cursor is the last slot and
id examined. A record that exists during the whole listing is therefore returned exactly once, by
whichever page reaches its place; one created or deleted meanwhile may or may not appear. A
page examines ``limit`` ids; a record deleted between the index read and the record read is left
out, so a page can hold fewer records than ``limit``; and a page reads at most
``MAX_SLOTS_PER_PAGE`` slots (slots emptied by deletes stay registered), so it can even be empty:
only ``next_cursor`` null means the end.

A cursor is written as the slot in four lowercase hex digits followed by the id (``02a7`` for the
start of slot 679, ``02a7<id>`` after that id): any slot and any id of the kind is a place to
resume from, so a listing's schema states exactly which cursors exist (``Cursor.pattern``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from app.redis import RedisStore
from app.slots import slot_tag

T = TypeVar("T")

# The slot part of a cursor: 0000 to 3fff, every slot and nothing else.
SLOT_HEX_PATTERN = "[0-3][0-9a-f]{3}"
SLOT_HEX_LENGTH = 4
_SLOT_HEX = re.compile(SLOT_HEX_PATTERN)
# Slots whose index is read at once when the ones before them held too few ids: it starts at one
# (a dense index fills a page from one slot) and doubles up to this while pages come up short.
MAX_SLOTS_PER_ROUND = 32
# Slots one page reads at most: registered slots whose records were all deleted stay registered,
# so a page stops here and returns a cursor, short or even empty, rather than reading them all.
MAX_SLOTS_PER_PAGE = 512


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the slot, and the last id examined in it ('' for none)."""

    slot: int
    after: str = ""

    @staticmethod
    def pattern(id_pattern: str) -> str:
        """Return the regex (JSON Schema flavour) of the cursors over ids matching ``id_pattern``.

        ``id_pattern`` is unanchored; every string the result matches is a cursor ``decode``
        reads (``decode`` itself accepts any id).
        """
        return f"^{SLOT_HEX_PATTERN}({id_pattern})?$"

    def encode(self) -> str:
        """Return the cursor as a URL-safe string (for ids that are URL-safe)."""
        return f"{self.slot:04x}{self.after}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor made by ``encode``; raise ValueError if it is not one."""
        if _SLOT_HEX.fullmatch(text[:SLOT_HEX_LENGTH]) is None:
            raise ValueError("is not a cursor this service returned")
        return cls(int(text[:SLOT_HEX_LENGTH], 16), text[SLOT_HEX_LENGTH:])


@dataclass(frozen=True)
class SlotIndex:
    """The ids of one kind of record, kept per hash slot; see the module's docstring."""

    name: str

    @property
    def registry_key(self) -> str:
        return f"{self.name}:slots"

    def key(self, slot: int) -> str:
        """Return the sorted set of the ids in ``slot``; its writers must use the same slot."""
        return f"{self.name}:index:{slot_tag(slot)}"

    async def register(self, store: RedisStore, slot: int) -> None:
        """Record that ``slot`` holds records; call it before creating the first one there."""
        key = self.registry_key
        await store.call(key, "ZADD", key, slot, slot, what=f"register {self.name} slot")

    async def page(
        self,
        store: RedisStore,
        *,
        cursor: Cursor | None,
        limit: int,
        fetch: Callable[[int, list[str]], Awaitable[Sequence[T]]],
        replica: bool = False,
    ) -> tuple[list[T], Cursor | None]:
        """Return up to ``limit`` records after ``cursor`` and the cursor of the next page.

        ``fetch(slot, ids)`` reads the records of ``ids`` (all in ``slot``), leaving out those
        that no longer exist. With ``replica`` (and redis.read_from_replicas) the index is read
        from replicas.
        """
        start = cursor or Cursor(0)
        chosen: list[tuple[int, list[str]]] = []
        remaining = limit
        lowest = str(start.slot)
        batch = 1
        examined = 0
        next_cursor: Cursor | None = None
        while remaining and next_cursor is None:
            registered = await self._registered(store, lowest, batch, replica)
            slots = [int(slot) for slot in registered]
            if not slots:
                break
            if examined >= MAX_SLOTS_PER_PAGE:
                next_cursor = Cursor(slots[0])
                break
            examined += len(slots)
            ids_per_slot = await asyncio.gather(
                *(
                    self._ids(
                        store,
                        slot,
                        start.after if slot == start.slot else "",
                        remaining + 1,
                        replica,
                    )
                    for slot in slots
                )
            )
            for slot, ids in zip(slots, ids_per_slot, strict=True):
                if not ids:
                    continue
                taken = ids[:remaining]
                chosen.append((slot, taken))
                remaining -= len(taken)
                if not remaining:
                    next_cursor = Cursor(slot, taken[-1])
                    break
            lowest = f"({slots[-1]}"
            batch = min(batch * 2, MAX_SLOTS_PER_ROUND)
        pages = await asyncio.gather(*(fetch(slot, ids) for slot, ids in chosen))
        return [item for page in pages for item in page], next_cursor

    async def _registered(
        self, store: RedisStore, lowest: str, count: int, replica: bool
    ) -> list[str]:
        key = self.registry_key
        found: list[str] = await store.call(
            key, "ZRANGE", key, lowest, "+inf", "BYSCORE", "LIMIT", 0, count,
            what=f"list {self.name} slots", replica=replica,
        )  # fmt: skip
        return found

    async def _ids(
        self, store: RedisStore, slot: int, after: str, count: int, replica: bool
    ) -> list[str]:
        key = self.key(slot)
        low = f"({after}" if after else "-"
        found: list[str] = await store.call(
            key, "ZRANGE", key, low, "+", "BYLEX", "LIMIT", 0, count,
            what=f"list {self.name}", replica=replica,
        )  # fmt: skip
        return found
