"""Reports over the aggregates the workers keep."""

from __future__ import annotations

import asyncio

from app.profiles import event_streams, existing, ranked_by_reads
from app.redis import RedisStore
from app.reporting.schemas import ProfileStat

MIN_PAGE = 32


async def top_profiles(*, store: RedisStore, n: int, streams: int = 1) -> list[ProfileStat]:
    """Return the n most-read existing profiles, highest count first (ties: as Redis orders
    them, by name from the last), over every event stream's counts.

    Each user is counted in one stream's keys only, so the n most-read of all are among the n
    most-read of each stream: the merge of every stream's top n is exact. Read from replicas
    with redis.read_from_replicas: the counts are the aggregator's, a moment behind anyway.
    """
    tops = await asyncio.gather(*(_top_of(store, stream, n) for stream in event_streams(streams)))
    merged = sorted(
        (stat for top in tops for stat in top), key=lambda s: (s.score, s.user), reverse=True
    )
    return merged[:n]


async def _top_of(store: RedisStore, stream: str, n: int) -> list[ProfileStat]:
    """Return the n most-read existing profiles of one stream's users.

    A delete whose event was never appended (its request died in between), or one made by other
    code, leaves a count for a profile that no longer exists; such entries are skipped here, so
    the report lists existing profiles only.
    """
    found: list[ProfileStat] = []
    page = max(n, MIN_PAGE)
    start = 0
    while len(found) < n:
        entries = await ranked_by_reads(
            store=store, stream=stream, start=start, count=page, replica=True
        )
        if not entries:
            break
        exists = await existing(store=store, users=[user for user, _score in entries], replica=True)
        found.extend(
            ProfileStat(user=user, score=score)
            for (user, score), present in zip(entries, exists, strict=True)
            if present
        )
        if len(entries) < page:
            break
        start += page
    return found[:n]
