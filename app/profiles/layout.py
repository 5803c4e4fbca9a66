"""How many streams the stored profile events and read counts are spread over, and moving them
to another number (``python -m app profiles event-streams N``).

A user's events go to stream ``slot(profile:<user>) mod n`` and their read count and register
live in that stream's slot, so a different ``profiles.event_streams`` puts a user's new events
in a stream whose keys do not hold their count. Changing it on a running system is therefore
refused, not guessed at: the number the data was written with is kept in
``{profile:events}:streams``, every process of the profiles and reporting services checks its
setting against it at start-up, and only the command below changes it, with the service
stopped: it applies every event still waiting in the old streams (exactly once, with the
aggregator's own script), moves each user whose stream changes (register, count, deletion
time), and records the new number. Interrupted, it is run again and finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import StartupRefused
from app.profiles import keys
from app.profiles.aggregator import apply_events
from app.redis import RedisClient, RedisStore

logger = logging.getLogger(__name__)

MIGRATING = "migrating"
# A consumer or writer active within this long means the service still runs.
QUIET_MS = 5000
MIGRATION_CONSUMER = "event-streams-migration"
PAGE = 500

SETTING = "profiles.event_streams [env APP_PROFILES__EVENT_STREAMS]"


class LayoutChangeRefused(RuntimeError):
    """The event streams cannot be changed now; the message says why and what to do."""


async def _stored_layout(store: RedisStore) -> str | None:
    layout: str | None = await store.call(
        keys.STREAMS_LAYOUT, "GET", keys.STREAMS_LAYOUT, what="read the event streams layout"
    )
    return layout


async def _has_events_data(store: RedisStore) -> bool:
    # The seeds' stream and the first version's counts share one slot.
    found = await store.call(
        keys.EVENTS_STREAM,
        "EXISTS",
        keys.EVENTS_STREAM,
        keys.READ_COUNTS,
        what="look for profile events",
    )
    return bool(found)


async def check_layout(store: RedisStore, count: int, *, record: bool = True) -> None:
    """Refuse to start (StartupRefused) when the stored events are spread over another number
    of streams than ``count``; on a database without a record, record it (``record``: the
    profiles service; reporting only reads)."""
    stored = await _stored_layout(store)
    if stored is None:
        has_data = await _has_events_data(store)
        if has_data and count != 1:
            # Written before the number was recorded: by one stream.
            stored = "1"
        elif record:
            await store.call(
                keys.STREAMS_LAYOUT,
                "SET",
                keys.STREAMS_LAYOUT,
                str(count),
                "NX",
                what="record the event streams layout",
            )
            stored = await _stored_layout(store)
        else:
            return
    if stored == str(count):
        return
    if stored is not None and stored.startswith(MIGRATING):
        target = stored.split()[-1]
        raise StartupRefused(
            f"the profile events are being moved to {target} streams, or a move was "
            f"interrupted: run `python -m app profiles event-streams {target}` (again) and "
            f"set {SETTING} to {target}"
        )
    raise StartupRefused(
        f"{SETTING} is {count}, but the profile events and read counts in this database are "
        f"spread over {stored} stream(s): stop every process of the profiles service and run "
        f"`python -m app profiles event-streams {count}` to move them (docs/deployment.md), or "
        f"set it back to {stored}"
    )


@dataclass
class Moved:
    """What a change of the event streams did."""

    streams_before: int
    streams_after: int
    events_applied: int = 0
    users_moved: int = 0


async def change_event_streams(
    store: RedisStore, to: int, *, say: Callable[[str], None] = print, quiet_ms: int = QUIET_MS
) -> Moved:
    """Spread the stored profile events and counts over ``to`` streams (the service stopped:
    refused when an event was appended or read within ``quiet_ms``)."""
    stored = await _stored_layout(store)
    if stored is None:
        stored = "1" if await _has_events_data(store) else None
    if stored is None:
        await store.call(keys.STREAMS_LAYOUT, "SET", keys.STREAMS_LAYOUT, str(to), what="layout")
        say(f"no profile events yet: recorded {to} stream(s)")
        return Moved(to, to)
    if stored.startswith(MIGRATING):
        _, before_text, target = stored.split()
        if int(target) != to:
            raise LayoutChangeRefused(
                f"a move to {target} streams was interrupted: finish it first "
                f"(`python -m app profiles event-streams {target}`)"
            )
        before = int(before_text)
    else:
        before = int(stored)
        if before == to:
            say(f"the profile events are already spread over {to} stream(s): nothing to do")
            return Moved(before, to)
        await _refuse_if_running(store, keys.event_streams(before), quiet_ms)
    await store.call(
        keys.STREAMS_LAYOUT,
        "SET",
        keys.STREAMS_LAYOUT,
        f"{MIGRATING} {before} {to}",
        what="mark the event streams move",
    )
    moved = Moved(before, to)
    old_streams = keys.event_streams(max(before, to))
    for stream in old_streams:
        moved.events_applied += await _drain(store, stream)
    say(f"applied {moved.events_applied} waiting event(s)")
    for stream in old_streams:
        moved.users_moved += await _move_users(store, stream, to)
    say(f"moved {moved.users_moved} user(s) to their new stream")
    for index in range(to, before):
        await _remove_stream(store, keys.event_stream(index), say)
    await store.call(
        keys.STREAMS_LAYOUT, "SET", keys.STREAMS_LAYOUT, str(to), what="record the layout"
    )
    say(f"the profile events are now spread over {to} stream(s): set {SETTING} to {to}")
    return moved


async def _refuse_if_running(store: RedisStore, streams: list[str], quiet_ms: int) -> None:
    now_ms = time.time() * 1000
    for stream in streams:
        if not await store.call(stream, "EXISTS", stream, what="stream exists"):
            continue
        last = await _last_id(store, stream)
        if now_ms - int(last.split("-")[0]) < quiet_ms:
            raise LayoutChangeRefused(
                f"an event was appended to {stream} less than {quiet_ms / 1000:g} s ago: stop "
                "every process of the profiles service (API and workers) first"
            )
        for consumer in await _consumers(store, stream):
            if consumer["name"] != MIGRATION_CONSUMER and int(consumer["idle"]) < quiet_ms:
                raise LayoutChangeRefused(
                    f"the aggregator's consumer {consumer['name']} read {stream} less than "
                    f"{quiet_ms / 1000:g} s ago: stop every process of the profiles service "
                    "(API and workers) first"
                )


async def _last_id(store: RedisStore, stream: str) -> str:
    async def read(client: RedisClient) -> str:
        info: dict[str, Any] = await client.xinfo_stream(stream)
        return str(info["last-generated-id"])

    last: str = await store.run(read, what="read a stream's last id")
    return last


async def _consumers(store: RedisStore, stream: str) -> list[dict[str, Any]]:
    try:
        found: list[dict[str, Any]] = await store.run(
            lambda c: c.xinfo_consumers(stream, keys.AGGREGATOR_GROUP), what="xinfo consumers"
        )
    except Exception as exc:  # no group on this stream yet
        if "NOGROUP" in str(exc):
            return []
        raise
    return found


async def _drain(store: RedisStore, stream: str) -> int:
    """Apply every event of ``stream`` the aggregator has not: pending ones (claimed from any
    consumer) and undelivered ones; return how many were applied."""
    if not await store.call(stream, "EXISTS", stream, what="stream exists"):
        return 0
    try:
        await store.run(
            lambda c: c.xgroup_create(stream, keys.AGGREGATOR_GROUP, id="0"), what="group"
        )
    except Exception as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    applied = 0
    cursor = "0-0"
    while True:
        cursor, claimed = await _claim(store, stream, cursor)
        entries = [(entry[0], entry[1] or {}) for entry in claimed if entry[0] is not None]
        if entries:
            applied += await apply_events(store, stream, entries)
        if cursor == "0-0":
            break
    while True:
        reply = await store.run(
            lambda c: c.xreadgroup(
                keys.AGGREGATOR_GROUP, MIGRATION_CONSUMER, {stream: ">"}, count=PAGE
            ),
            what="read waiting events",
        )
        entries = [(entry[0], entry[1] or {}) for _name, batch in reply or () for entry in batch]
        if not entries:
            break
        applied += await apply_events(store, stream, entries)
    await store.run(
        lambda c: c.xgroup_delconsumer(stream, keys.AGGREGATOR_GROUP, MIGRATION_CONSUMER),
        what="remove the migration's consumer",
    )
    return applied


async def _claim(store: RedisStore, stream: str, cursor: str) -> tuple[str, list[Any]]:
    async def claim(client: RedisClient) -> tuple[str, list[Any]]:
        reply: list[Any] = await client.xautoclaim(
            stream, keys.AGGREGATOR_GROUP, MIGRATION_CONSUMER, 0, cursor, count=PAGE
        )
        return str(reply[0]), reply[1]

    claimed: tuple[str, list[Any]] = await store.run(claim, what="claim pending events")
    return claimed


async def _move_users(store: RedisStore, stream: str, to: int) -> int:
    """Move the users of ``stream`` whose events now go to another stream; return how many.

    A user is found by any of their entries: the register, the counts (a count without a
    register entry, from an older version or other code, moves too), the deleted index.
    """
    moved: set[str] = set()
    for key, scan in (
        (keys.generations(stream), "HSCAN"),
        (keys.read_counts(stream), "ZSCAN"),
        (keys.deleted(stream), "ZSCAN"),
    ):
        cursor = "0"
        while True:
            cursor, users = await _scan(store, scan, key, cursor)
            leaving = [u for u in users if u not in moved and keys.stream_of(u, to) != stream]
            await asyncio.gather(*(_move_user(store, stream, user, to) for user in leaving))
            moved.update(leaving)
            if cursor == "0":
                break
    return len(moved)


async def _scan(store: RedisStore, scan: str, key: str, cursor: str) -> tuple[str, list[str]]:
    """Return the next cursor and the members (fields) of one HSCAN or ZSCAN page of ``key``."""
    reply = await store.call(key, scan, key, cursor, "COUNT", PAGE, what="scan for users")
    at, flat = reply
    if isinstance(flat, dict):
        return str(at), [str(member) for member in flat]
    # [member, value, member, value...], or [(member, score), ...] as redis-py parses ZSCAN
    if flat and isinstance(flat[0], list | tuple):
        return str(at), [str(pair[0]) for pair in flat]
    return str(at), [str(member) for member in flat[::2]]


async def _move_user(store: RedisStore, stream: str, user: str, to: int) -> None:
    # Written to the new stream's keys first, then removed from the old: run again after an
    # interruption, it writes the same values.
    target = keys.stream_of(user, to)
    value, count, deleted_at = await asyncio.gather(
        store.call(stream, "HGET", keys.generations(stream), user, what="read a register"),
        store.call(stream, "ZSCORE", keys.read_counts(stream), user, what="read a count"),
        store.call(stream, "ZSCORE", keys.deleted(stream), user, what="read a deletion"),
    )
    what = "move a user to their new event stream"
    writes = []
    if value is not None:
        writes.append(store.call(target, "HSET", keys.generations(target), user, value, what=what))
    if count is not None:
        writes.append(store.call(target, "ZADD", keys.read_counts(target), count, user, what=what))
    if deleted_at is not None:
        writes.append(store.call(target, "ZADD", keys.deleted(target), deleted_at, user, what=what))
    await asyncio.gather(*writes)
    await asyncio.gather(
        store.call(stream, "HDEL", keys.generations(stream), user, what=what),
        store.call(stream, "ZREM", keys.read_counts(stream), user, what=what),
        store.call(stream, "ZREM", keys.deleted(stream), user, what=what),
    )


async def _remove_stream(store: RedisStore, stream: str, say: Callable[[str], None]) -> None:
    """Remove a stream no longer used, with its (now empty) aggregates; a stream other groups
    still read is kept for them."""
    if await store.call(stream, "EXISTS", stream, what="stream exists"):
        groups = await store.run(lambda c: c.xinfo_groups(stream), what="xinfo groups")
        others = [g["name"] for g in groups if g["name"] != keys.AGGREGATOR_GROUP]
        if others:
            say(f"kept {stream}: other consumer groups read it ({', '.join(others)})")
        else:
            await store.call(stream, "UNLINK", stream, what="remove an unused stream")
    await store.call(
        stream,
        "UNLINK",
        keys.read_counts(stream),
        keys.generations(stream),
        keys.deleted(stream),
        what="remove an unused stream's aggregates",
    )
