"""Helpers of the messaging tests."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from app.messaging import keys


async def trace_expiry(redis: RedisCluster, message_id: str) -> tuple[str, float] | None:
    """Return the member of the slot's trace expiry set that names ``message_id`` (a batch of
    ids separated by spaces: channel.lua, ``expire_traces``) and when it is due (ms), or None
    when the trace is not set to go."""
    expiry = keys.message_trace_keys(message_id)[1]
    members: Any = await redis.zrange(expiry, 0, -1, withscores=True)
    for member, due_ms in members:
        if message_id in member.split(" "):
            return member, due_ms
    return None


async def trace_due_ms(redis: RedisCluster, message_id: str) -> float | None:
    """Return when the trace of ``message_id`` is due to go (ms), or None."""
    found = await trace_expiry(redis, message_id)
    return found[1] if found else None
