"""Reports over the aggregates the workers keep."""

from __future__ import annotations

from app.profiles import existing, ranked_by_reads
from app.redis import RedisStore
from app.reporting.schemas import ProfileStat

MIN_PAGE = 32


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
        entries = await ranked_by_reads(store=store, start=start, count=page)
        if not entries:
            break
        exists = await existing(store=store, users=[user for user, _score in entries])
        found.extend(
            ProfileStat(user=user, score=score)
            for (user, score), present in zip(entries, exists, strict=True)
            if present
        )
        if len(entries) < page:
            break
        start += page
    return found[:n]
