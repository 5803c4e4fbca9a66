"""What the profile domain tells an operator: the event streams' state, the events applied and
trimmed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import Counter
from prometheus_client.metrics_core import Metric

from app.domain import Context
from app.profiles import keys
from app.stream_gauges import StreamGauges

EVENTS_APPLIED = Counter(
    "mdb_profile_events_applied",
    "Profile events the aggregator applied (each counted once, even after a re-delivery).",
    ["stream"],
)
EVENTS_TRIMMED = Counter(
    "mdb_profile_events_trimmed",
    "Profile events trimmed by the retention (acknowledged by every group, older than "
    "profiles.events_retention_s).",
    ["stream"],
)


async def gauges(context: Context) -> Sequence[Metric]:
    """Read each event stream's length and its consumer groups' lag, pending and oldest age."""
    families = StreamGauges()
    streams = keys.event_streams(context.settings.profiles.event_streams)
    await asyncio.gather(*(families.read(context.store, stream) for stream in streams))
    return families.families()
