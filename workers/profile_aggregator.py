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
    """Acknowledge these events and apply each one whose acknowledgement took, in one script.

    Returns how many this call acknowledged: none when the batch was already processed. The
    script explains why the order events are applied in does not matter.
    """
    acknowledged: int = await APPLY_EVENTS(
        store,
        keys=[keys.EVENTS_STREAM, keys.READ_COUNTS, keys.GENERATIONS],
        args=[keys.AGGREGATOR_GROUP, *ids],
        what="apply profile events",
    )
    return acknowledged


def aggregator_spec(*, consumer: str, settings: WorkerSettings) -> ConsumerSpec:
    """Return where and how the aggregator consumes."""
    return ConsumerSpec(
        stream=keys.EVENTS_STREAM,
        group=keys.AGGREGATOR_GROUP,
        consumer=consumer,
        settings=settings,
    )
