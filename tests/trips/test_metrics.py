"""The trip metrics after known traffic: assignment outcomes and the trips waiting, through the
app and under the domain's own ACL user, against the real cluster."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.trips import keys
from tests.conftest import running_app
from tests.observability.scrape import delta, scrape, value, with_metrics
from tests.trips.test_trips import LISBON, PORTO, assign, new_driver, new_trip


async def waiting_in(redis: RedisCluster, slots: list[int]) -> int:
    return sum([await redis.zcard(keys.pending_key(slot)) for slot in slots])


async def test_assignments_conflicts_and_waiting_trips(
    settings: Settings, redis: RedisCluster
) -> None:
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        taken, waiting = await new_trip(http), await new_trip(http)
        far, far_waiting = await new_trip(http, PORTO), await new_trip(http, PORTO)
        rui, eva = await new_driver(http, "Rui"), await new_driver(http, "Eva")
        ines = await new_driver(http, "Ines", PORTO)
        assert (await assign(http, taken["id"], rui["id"])).status_code == 200
        # Conflicts: the trip is taken, then the driver is busy.
        assert (await assign(http, taken["id"], eva["id"])).status_code == 409
        assert (await assign(http, waiting["id"], rui["id"])).status_code == 409
        assert (await assign(http, far["id"], ines["id"])).status_code == 200
        # Refused for another reason: not a conflict.
        assert (await assign(http, far_waiting["id"], eva["id"])).status_code == 409
        after = await scrape(http)
    assert delta(after, before, "mdb_trip_assignments_total", outcome="assigned") == 2
    assert delta(after, before, "mdb_trip_assignments_total", outcome="conflict") == 2
    assert value(after, "mdb_trips", status="requested") == 2
    assert value(after, "mdb_trip_region_slots") == value(after, "mdb_trip_region_slots_read") == 2


async def test_regions_beyond_the_cap_are_counted_not_read(
    settings: Settings, redis: RedisCluster
) -> None:
    async with running_app(with_metrics(settings, state_cache_s=0, max_channels=1)) as (http, _):
        for pickup in (LISBON, LISBON, PORTO):
            await new_trip(http, pickup)
        found = await scrape(http)
    slots = sorted(int(slot) for slot in await redis.smembers(keys.REGISTRY))
    assert len(slots) == 2
    assert await waiting_in(redis, slots) == 3
    assert value(found, "mdb_trip_region_slots") == 2
    assert value(found, "mdb_trip_region_slots_read") == 1
    assert value(found, "mdb_trips", status="requested") == await waiting_in(redis, slots[:1])
