"""Shared trip and driver state (the microservices post's trip and driver management): regions
as hash slots, assignment races settled in one script, trip documents as JSON."""

import logging

from app.domain import Context, Domain, KeyPattern
from app.trips.metrics import gauges
from app.trips.router import drivers_router, trips_router
from app.trips.service import TripsConfig, server_has_json

logger = logging.getLogger(__name__)


async def setup(context: Context) -> TripsConfig:
    """Return the trips' configuration, with whether the server has native JSON."""
    config = TripsConfig(
        region_size_deg=context.settings.trips.region_size_deg,
        native_json=await server_has_json(context.store),
    )
    logger.info("trip documents: native_json=%s", config.native_json)
    return config


DOMAIN = Domain(
    name="trips",
    routers=[trips_router, drivers_router],
    keys=[
        KeyPattern("{*}:trip:*", "read-write", "trips and their JSON documents, per region"),
        KeyPattern("{*}:driver:*", "read-write", "drivers, per region"),
        KeyPattern("{*}:trips:pending", "read-write", "a region's waiting trips, oldest first"),
        KeyPattern("{*}:trips:pending:geo", "read-write", "a region's waiting trips by pickup"),
        KeyPattern("trips:regions", "read-write", "the regions that ever held a waiting trip"),
        KeyPattern("trips:json-probe", "read-write", "probed once: does the server have JSON?"),
    ],
    commands=[
        "+evalsha",
        "+script|load",
        "+sadd",
        "+smembers",
        "+get",
        "+hgetall",
        "+hset",
        "+zrange",
        "+geosearch",
        # Run by the gauges hook (waiting trips per region).
        "+zcard",
        # Run by the trip script.
        "+set",
        "+exists",
        "+hget",
        "+hmget",
        "+hdel",
        "+zadd",
        "+zrem",
        "+geoadd",
    ],
    # Where the server has JSON (MemoryDB, Redis Stack). Without them the documents are kept
    # as text: a deployment must not drop them once documents are stored natively.
    optional_commands=["+json.get", "+json.set"],
    setup=setup,
    gauges=gauges,
)
