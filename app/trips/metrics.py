"""What the trip domain tells an operator: assignments and their conflicts, and waiting trips.

A conflict is an assignment refused because the trip was taken or the driver busy: two
dispatchers raced for one of them. The waiting trips are read at scrape time from each
region's pending index (the only status with an index): one ZCARD per slot listed in
``trips:regions``, for at most ``metrics.max_channels`` slots per refresh (the first by slot
number); ``mdb_trip_region_slots`` and ``mdb_trip_region_slots_read`` tell whether the sum
covers every region.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from app.domain import Context
from app.trips import keys

ASSIGNMENTS = Counter(
    "mdb_trip_assignments",
    "Trip assignments, by outcome: assigned, or conflict (refused: the trip was taken or the "
    "driver busy).",
    ["outcome"],
)
ASSIGNED = ASSIGNMENTS.labels("assigned")
CONFLICTS = ASSIGNMENTS.labels("conflict")


async def gauges(context: Context) -> Sequence[Metric]:
    """Read how many trips wait for a driver, over at most ``metrics.max_channels`` regions."""
    store = context.store
    members: list[str] = await store.call(
        keys.REGISTRY, "SMEMBERS", keys.REGISTRY, what="list regions"
    )
    slots = sorted(int(member) for member in members)
    read = slots[: context.settings.metrics.max_channels]
    counts: list[int] = await asyncio.gather(
        *(
            store.call(key, "ZCARD", key, what="count pending trips")
            for key in map(keys.pending_key, read)
        )
    )
    trips = GaugeMetricFamily(
        "mdb_trips",
        "Trips by status, as the indexes hold them: requested (waiting for a driver), summed "
        "over the region slots read.",
        labels=["status"],
    )
    trips.add_metric(["requested"], sum(counts))
    return [
        trips,
        GaugeMetricFamily(
            "mdb_trip_region_slots",
            "Hash slots that ever held a waiting trip (trips:regions).",
            value=len(slots),
        ),
        GaugeMetricFamily(
            "mdb_trip_region_slots_read",
            "Region slots whose waiting trips were counted this refresh (metrics.max_channels "
            "at most).",
            value=len(read),
        ),
    ]
