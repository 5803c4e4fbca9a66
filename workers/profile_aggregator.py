"""The aggregator: keeps per-profile read counts from ``profile:events`` in a sorted set."""

from __future__ import annotations

from pathlib import Path

from app.config import WorkerSettings
from app.profiles import keys
from app.redis import RedisStore
from app.scripting import LuaScript
from workers.consumer import ConsumerSpec

APPLY_EVENTS = LuaScript.load(Path(__file__).with_name("profile_aggregator.lua"))
# Events applied per script call, so that one call never holds the shard for long.
APPLY_BUDGET = 200


async def apply_events(store: RedisStore, ids: list[str]) -> int:
    """Acknowledge these events and apply every delivered event, in stream order, once.

    Returns how many of ``ids`` this call acknowledged (none when the batch was already
    processed). The script explains why effects follow a cursor in stream order.
    """
    acknowledged, _applied, more = await _apply(store, ids)
    while more:
        _acknowledged, _applied, more = await _apply(store, [])
    return acknowledged


async def _apply(store: RedisStore, ids: list[str]) -> tuple[int, int, int]:
    acknowledged, applied, more = await APPLY_EVENTS(
        store,
        keys=[keys.EVENTS_STREAM, keys.READ_COUNTS, keys.APPLIED_UPTO],
        args=[keys.AGGREGATOR_GROUP, str(APPLY_BUDGET), *ids],
        what="apply profile events",
    )
    return int(acknowledged), int(applied), int(more)


def aggregator_spec(*, consumer: str, settings: WorkerSettings) -> ConsumerSpec:
    """Return where and how the aggregator consumes."""
    return ConsumerSpec(
        stream=keys.EVENTS_STREAM,
        group=keys.AGGREGATOR_GROUP,
        consumer=consumer,
        settings=settings,
    )
