"""The aggregator: keeps per-profile read counts from ``profile:events`` in a sorted set."""

from __future__ import annotations

from pathlib import Path

from app.config import WorkerSettings
from app.profiles import keys
from app.redis import RedisStore
from app.scripting import LuaScript
from workers.consumer import ConsumerSpec

APPLY_EVENTS = LuaScript.load(Path(__file__).with_name("profile_aggregator.lua"))


async def apply_events(store: RedisStore, ids: list[str]) -> int:
    """Apply and acknowledge the events with these ids in one script; return how many applied."""
    applied: int = await APPLY_EVENTS(
        store,
        keys=[keys.EVENTS_STREAM, keys.READ_COUNTS],
        args=[keys.AGGREGATOR_GROUP, *ids],
        what="apply profile events",
    )
    return applied


def aggregator_spec(*, consumer: str, settings: WorkerSettings) -> ConsumerSpec:
    """Return where and how the aggregator consumes."""
    return ConsumerSpec(
        stream=keys.EVENTS_STREAM,
        group=keys.AGGREGATOR_GROUP,
        consumer=consumer,
        settings=settings,
    )
