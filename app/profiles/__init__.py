"""The profile service (the seeds' /profile/<user>): profiles on hashes, every operation an
event on ``profile:events``, and the aggregator that counts reads from those events.

Public to other domains: ``ranked_by_reads``, ``existing`` and ``event_streams`` (reporting
reads the counts of every stream), ``check_layout``; to the command line: ``change_event_streams``.
"""

from app.domain import Context, Domain, KeyPattern
from app.profiles.aggregator import AGGREGATOR
from app.profiles.keys import event_streams
from app.profiles.layout import LayoutChangeRefused, change_event_streams, check_layout
from app.profiles.metrics import gauges
from app.profiles.router import router
from app.profiles.service import EventsConfig, existing, ranked_by_reads

__all__ = [
    "DOMAIN",
    "LayoutChangeRefused",
    "change_event_streams",
    "check_layout",
    "event_streams",
    "existing",
    "ranked_by_reads",
]


async def _setup(context: Context) -> EventsConfig:
    """Refuse events spread over another number of streams than configured (layout.py); hand
    the routes the events' configuration (``request.state.profiles``)."""
    settings = context.settings.profiles
    await check_layout(context.store, settings.event_streams)
    return EventsConfig.of(settings.events_retention_s, settings.event_streams)


DOMAIN = Domain(
    name="profiles",
    routers=[router],
    consumers=[AGGREGATOR],
    setup=_setup,
    gauges=gauges,
    keys=[
        KeyPattern(
            "profile:*",
            "read-write",
            "profiles, and the event streams profile:events and profile:events:<i>",
        ),
        KeyPattern(
            "{profile:*}:*",
            "read-write",
            "a profile's generation and request markers; each event stream's read counts, "
            "register, deleted profiles and the stream writer's batch markers "
            "({profile:events}:..., {profile:events:<i>}:...); the streams' layout",
        ),
    ],
    commands=[
        "+evalsha",
        # The read script (no writes: it may run on a replica).
        "+evalsha_ro",
        "+script|load",
        # Run by the profile scripts and the stream writer's script.
        "+get",
        "+set",
        "+exists",
        "+hset",
        "+hgetall",
        "+incr",
        "+unlink",
        "+xadd",
        "+xrange",
        # The aggregator: its consumer-group loop, and its script.
        "+xgroup|create",
        "+xreadgroup",
        "+xautoclaim",
        "+xack",
        "+hget",
        "+zadd",
        "+zincrby",
        "+zrem",
        # The retention (trim_events.lua); the scripts' clock and ended counters' expiry.
        "+xtrim",
        "+zrange",
        "+hdel",
        "+time",
        "+expire",
        # The listing of profiles by reads.
        "+zrevrange",
        # Its gauges: the stream's length, the group's lag and pending entries.
        "+xlen",
        "+xinfo|groups",
        "+xpending",
        # `python -m app profiles event-streams N` (layout.py), run as the service's user.
        "+xinfo|stream",
        "+xinfo|consumers",
        "+xgroup|delconsumer",
        "+hscan",
        "+zscan",
        "+zscore",
    ],
)
