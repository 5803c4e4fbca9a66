"""Reports over the aggregates the workers keep."""

from __future__ import annotations

from functools import partial
from typing import Any

from app.profiles import keys
from app.redis import RedisClient, RedisStore
from app.reporting.schemas import ProfileStat

MIN_PAGE = 32


async def _ranked(client: RedisClient, *, start: int, count: int) -> list[tuple[str, float]]:
    ranked: Any = await client.zrevrange(
        keys.READ_COUNTS, start, start + count - 1, withscores=True
    )
    return [(str(user), float(score)) for user, score in ranked]


async def _existing(client: RedisClient, *, users: list[str]) -> list[bool]:
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.exists(keys.profile_key(user))
    return [bool(found) for found in await pipe.execute()]


async def top_profiles(*, store: RedisStore, n: int) -> list[ProfileStat]:
    """Return the n most-read existing profiles, highest count first.

    A delete whose event was never appended (its request died in between), or one made by other
    code, leaves a count for a profile that no longer exists; such entries are skipped here, so
    the report lists existing profiles only.
    """
    found: list[ProfileStat] = []
    page = max(n, MIN_PAGE)
    start = 0
    while len(found) < n:
        entries = await store.run(
            partial(_ranked, start=start, count=page), what="read profile stats"
        )
        if not entries:
            break
        exists = await store.run(
            partial(_existing, users=[user for user, _score in entries]),
            what="check profiles exist",
        )
        found.extend(
            ProfileStat(user=user, score=int(score))
            for (user, score), present in zip(entries, exists, strict=True)
            if present
        )
        if len(entries) < page:
            break
        start += page
    return found[:n]
