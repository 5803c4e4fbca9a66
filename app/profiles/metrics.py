"""What the profile domain tells an operator: the event stream's state and the events applied."""

from __future__ import annotations

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


async def gauges(context: Context) -> Sequence[Metric]:
    """Read the event stream's length and its consumer group's lag, pending and oldest age."""
    stream = StreamGauges()
    await stream.read(context.store, keys.EVENTS_STREAM)
    return stream.families()
