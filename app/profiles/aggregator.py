"""The aggregator: keeps per-profile read counts from ``profile:events`` in a sorted set.

The profile domain declares it (``AGGREGATOR``); the consumer-group loop in ``workers`` runs it.
"""

from __future__ import annotations

from pathlib import Path

from app.domain import ConsumerSpec, StreamEntry
from app.profiles import keys
from app.profiles.metrics import EVENTS_APPLIED
from app.redis import RedisStore
from app.scripting import LuaScript, as_int

APPLY_EVENTS = LuaScript.load(Path(__file__).with_name("aggregator.lua"))
_APPLIED = EVENTS_APPLIED.labels(keys.EVENTS_STREAM)


async def apply_events(store: RedisStore, entries: list[StreamEntry]) -> int:
    """Acknowledge these events and apply each one whose acknowledgement took, in one script.

    Returns how many this call acknowledged: none when the batch was already processed. The
    script explains why the order events are applied in does not matter. It gets each event's
    fields as they were delivered, so it does not read them again from the stream.
    """
    args = [keys.AGGREGATOR_GROUP]
    for entry_id, fields in entries:
        # An absent field travels as "": the script reads it as absent.
        args += [
            entry_id,
            fields.get("user", ""),
            fields.get("type", ""),
            fields.get("generation", ""),
        ]
    reply = await APPLY_EVENTS(
        store,
        keys=[keys.EVENTS_STREAM, keys.READ_COUNTS, keys.GENERATIONS],
        args=args,
        what="apply profile events",
    )
    applied = as_int(reply)
    _APPLIED.inc(applied)
    return applied


AGGREGATOR = ConsumerSpec(
    name="aggregator",
    stream=keys.EVENTS_STREAM,
    group=keys.AGGREGATOR_GROUP,
    handle=apply_events,
    count=lambda settings: settings.workers.consumers_per_process,
)
