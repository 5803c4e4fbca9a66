"""The trip metrics after known traffic: assignment outcomes and the trips waiting, through the
app and under the domain's own ACL user, against the real cluster."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from redis.asyncio.cluster import RedisCluster

from app.config import RedisSettings, Settings
from app.domain import Context
from app.local_cluster import LocalCluster
from app.redis import open_store
from app.streams import StreamWriter
from app.trips import DOMAIN, keys
from tests.conftest import running_app
from tests.observability.scrape import delta, scrape, value, with_metrics
from tests.test_domain_acl import PASSWORD, delete_user, rules, set_user
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


def samples(families: list[Metric]) -> dict[str, float]:
    return {sample.name: sample.value for family in families for sample in family.samples}


async def test_the_gauges_run_under_the_domains_declared_user(
    cluster: LocalCluster, settings: Settings
) -> None:
    async with running_app(settings) as (http, _state):
        await new_trip(http)
    user = "svc-trips-gauges"
    set_user(cluster, user, rules(DOMAIN))
    try:
        url = f"redis://{user}:{PASSWORD}@127.0.0.1:{cluster.ports[0]}"
        async with open_store(RedisSettings(), url) as store:
            streams = StreamWriter(store)
            try:
                assert DOMAIN.gauges is not None
                found = samples(list(await DOMAIN.gauges(Context(settings, store, streams))))
            finally:
                await streams.aclose()
    finally:
        delete_user(cluster, user)
    assert found["mdb_trips"] == 1
    assert found["mdb_trip_region_slots"] == 1
