"""The aggregator: keeps per-profile read counts from the profile event streams.

The profile domain declares it (``AGGREGATOR``): a consumer group per stream
(``profiles.event_streams``), each with its own read counts and register in the stream's slot;
the consumer-group loop in ``workers`` runs it, and its housekeeping applies the retention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.domain import ConsumerSpec, StopConsuming, StreamEntry
from app.profiles import keys
from app.profiles.metrics import EVENTS_APPLIED, EVENTS_TRIMMED
from app.redis import RedisStore
from app.scripting import LuaScript, as_fixed, as_int

APPLY_EVENTS = LuaScript.load(Path(__file__).with_name("aggregator.lua"))
TRIM_EVENTS = LuaScript.load(Path(__file__).with_name("trim_events.lua"))
# What one run of the retention script removes at most, so that no run blocks its primary long
# (100,000 entries take about a millisecond), and the runs per housekeeping turn: with the turn
# every workers.claim_interval_s (5 s), up to 2,000 deletes/s and a million events/s per stream
# are kept up with, and a stream never trimmed before is caught up over a few turns.
FORGET_LIMIT = 1000
TRIM_LIMIT = 100_000
RETENTION_RUNS = 50


@dataclass
class Retained:
    """What a retention turn removed from one stream and its keys."""

    trimmed: int = 0
    forgotten: int = 0
    consumers_removed: int = 0


async def apply_events(store: RedisStore, stream: str, entries: list[StreamEntry]) -> int:
    """Acknowledge these events of ``stream`` and apply each one whose acknowledgement took, in
    one script.

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
        store, keys=keys.aggregate_keys(stream), args=args, what="apply profile events"
    )
    applied = as_int(reply)
    EVENTS_APPLIED.labels(stream).inc(applied)
    return applied


async def apply_retention(store: RedisStore, stream: str, settings: Settings) -> Retained:
    """Trim what every group of ``stream`` is done with past the retention, forget users
    deleted longer ago than that, remove the aggregator's consumers gone for longer; return
    what it did. Runs the script again while a run did all it may, at most RETENTION_RUNS.

    First, whether the events are still spread over as many streams as this process thinks:
    after `python -m app profiles event-streams` moved them (the service should have been
    stopped), a process that missed it stops consuming and fails its readiness
    (StopConsuming), so that it is restarted, and its restart refuses the old setting.
    """
    count = settings.profiles.event_streams
    layout = await store.call(
        keys.STREAMS_LAYOUT, "GET", keys.STREAMS_LAYOUT, what="check the event streams layout"
    )
    if layout is not None and layout != str(count):
        raise StopConsuming(
            f"the profile events are now spread over {layout!r} streams, not {count} "
            f"(profiles.event_streams): restart this process with the new setting"
        )
    done = Retained()
    for _ in range(RETENTION_RUNS):
        reply = await TRIM_EVENTS(
            store,
            keys=[stream, keys.generations(stream), keys.deleted(stream)],
            args=[
                str(settings.profiles.events_retention_s * 1000),
                str(FORGET_LIMIT),
                keys.AGGREGATOR_GROUP,
                str(TRIM_LIMIT),
            ],
            what="trim profile events",
        )
        trimmed, forgotten, removed = (as_int(item) for item in as_fixed(reply, 3))
        done.trimmed += trimmed
        done.forgotten += forgotten
        done.consumers_removed += removed
        if forgotten < FORGET_LIMIT and trimmed < TRIM_LIMIT:
            break
    EVENTS_TRIMMED.labels(stream).inc(done.trimmed)
    return done


def event_streams(settings: Settings) -> Sequence[str]:
    return keys.event_streams(settings.profiles.event_streams)


AGGREGATOR = ConsumerSpec(
    name="aggregator",
    streams=event_streams,
    group=keys.AGGREGATOR_GROUP,
    handle=apply_events,
    count=lambda settings: settings.workers.consumers_per_process,
    housekeeping=apply_retention,
)
