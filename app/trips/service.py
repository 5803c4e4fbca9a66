"""Trip Management and Driver Management sharing trip state in Redis (the patterns post).

Every rule-bearing step (create, assign, a status change, a document edit) is one run of
``trips.lua`` on the region's slot: the trip's hash and JSON document, the driver's hash and the
pending indexes share that slot (``keys.py``), so an assignment either happens whole (the trip
gets the driver and car, leaves the pending set and geo index, the driver becomes busy) or not
at all, and of several drivers racing for one trip, or one driver racing for several trips,
exactly one wins: the script runs alone on its slot. A driver takes trips of their own region.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import exceptions as rexc

from app.records.codec import compact_json
from app.records.ids import new_ulid, ulid_slot
from app.redis import RedisStore
from app.scripting import LuaScript
from app.trips import keys
from app.trips.exceptions import (
    BadMove,
    DocumentRefused,
    DriverBusy,
    DriverNotFound,
    ManagedPath,
    OutsideRegion,
    PathNotFound,
    TripNotFound,
    TripTaken,
)
from app.trips.schemas import DriverCreate, DriverPublic, Point, Status, TripCreate, parse_path

TRIPS_SCRIPT = LuaScript.load(Path(__file__).with_name("trips.lua"))
NOT_FOUND, DRIVER_NOT_FOUND, TRIP_TAKEN, DRIVER_BUSY, BAD_MOVE, PATH_NOT_FOUND = range(-1, -7, -1)
OUTSIDE_REGION, DRIVER_CHANGED, DOC_REFUSED = -7, -8, -9
# A trip document's size limit (plain Redis: each edit rewrites the whole text on the server).
MAX_DOCUMENT_BYTES = 1024 * 1024
# Reads in flight at once for a listing: below the client's per-node connection pool.
MAX_CONCURRENT_READS = 32
# Members of the trip document that only the trip API changes.
MANAGED = frozenset(
    {"id", "requester", "pickup", "dropoff", "region", "status", "driver", "created_at"}
    | {f"{status}_at" for status in ("assigned", "in_progress", "completed", "cancelled")}
)
# Redis's geo commands use this earth radius; the region search must not cover less than they do.
EARTH_RADIUS_KM = 6372.797560856
# Cells are chosen with this much room around the circle.
SEARCH_MARGIN = 1.01
MAX_REGIONS_PER_SEARCH = 400


@dataclass(frozen=True)
class TripsConfig:
    """What the trip services need to know of the deployment."""

    region_size_deg: float
    native_json: bool

    @property
    def flag(self) -> str:
        return "1" if self.native_json else "0"


async def server_has_json(store: RedisStore) -> bool:
    """Return whether the server has native JSON commands (MemoryDB, Redis Stack)."""
    probe = "trips:json-probe"
    try:
        await store.call(probe, "JSON.GET", probe, what="probe JSON commands")
    except rexc.NoPermissionError:
        # An ACL user without the JSON commands: documents are kept as text, which it can edit.
        return False
    except rexc.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return False
        raise
    return True


def _now() -> tuple[str, int]:
    milliseconds = time.time_ns() // 1_000_000
    stamp = datetime.fromtimestamp(milliseconds / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z"), milliseconds


def _region_keys(slot: int) -> list[str]:
    return [keys.pending_key(slot), keys.pending_geo_key(slot)]


async def create_trip(
    *, store: RedisStore, config: TripsConfig, trip: TripCreate
) -> dict[str, Any]:
    """Store a requested trip in its pickup's region and index it as pending."""
    region = keys.region_of(trip.pickup.lat, trip.pickup.lon, config.region_size_deg)
    slot = keys.region_slot(region)
    trip_id = new_ulid(slot=slot)
    created_at, created_ms = _now()
    document = {
        "id": trip_id,
        "requester": trip.requester,
        "pickup": trip.pickup.model_dump(),
        "dropoff": trip.dropoff.model_dump(),
        "region": region,
        "status": "requested",
        "driver": None,
        "created_at": created_at,
    }
    await store.run(lambda r: r.sadd(keys.REGISTRY, str(slot)), what="register region")
    _, text = await TRIPS_SCRIPT(
        store,
        keys=[keys.trip_key(trip_id), keys.trip_doc_key(trip_id), *_region_keys(slot)],
        args=[
            "create",
            config.flag,
            trip_id,
            trip.requester,
            created_at,
            str(created_ms),
            repr(trip.pickup.lat),
            repr(keys.wrap_longitude(trip.pickup.lon)),
            compact_json(document),
            region,
        ],
        what="create trip",
    )
    return _document(text)


def _document(text: str) -> dict[str, Any]:
    parsed = json.loads(text)
    # Native JSON.GET of the root answers the document itself; with a "$" path, a list of one.
    if isinstance(parsed, list):
        parsed = parsed[0]
    document: dict[str, Any] = parsed
    return document


async def read_trip(*, store: RedisStore, config: TripsConfig, trip_id: str) -> dict[str, Any]:
    """Return the trip document; raise TripNotFound."""
    key = keys.trip_doc_key(trip_id)
    command = ("JSON.GET", key) if config.native_json else ("GET", key)
    text = await store.call(key, *command, what="read trip")
    if text is None:
        raise TripNotFound(trip_id)
    return _document(text)


async def assign_trip(
    *, store: RedisStore, config: TripsConfig, trip_id: str, driver_id: str
) -> dict[str, Any]:
    """Give a requested trip to an available driver of its region, all at once."""
    trip_slot, driver_slot = ulid_slot(trip_id), ulid_slot(driver_id)
    if trip_slot != driver_slot:
        trip = await read_trip(store=store, config=config, trip_id=trip_id)
        driver = await read_driver(store=store, driver_id=driver_id)
        raise OutsideRegion(driver.region, str(trip["region"]))
    now, _ = _now()
    reply = await TRIPS_SCRIPT(
        store,
        keys=[
            keys.trip_key(trip_id),
            keys.trip_doc_key(trip_id),
            *_region_keys(trip_slot),
            keys.driver_key(driver_id),
        ],
        args=["assign", config.flag, trip_id, driver_id, now],
        what="assign trip",
    )
    if reply[0] == NOT_FOUND:
        raise TripNotFound(trip_id)
    if reply[0] == DRIVER_NOT_FOUND:
        raise DriverNotFound(driver_id)
    if reply[0] == TRIP_TAKEN:
        raise TripTaken(trip_id, reply[1])
    if reply[0] == DRIVER_BUSY:
        raise DriverBusy(driver_id, reply[1])
    if reply[0] == OUTSIDE_REGION:
        raise OutsideRegion(reply[1], reply[2])
    return _document(reply[1])


async def move_trip(
    *, store: RedisStore, config: TripsConfig, trip_id: str, status: Status
) -> dict[str, Any]:
    """Move a trip along requested → assigned → in_progress → completed, or to cancelled.

    A move to the status the trip already has changes nothing and answers the trip, so a
    repeated request is safe.
    """
    slot = ulid_slot(trip_id)
    trip_key = keys.trip_key(trip_id)
    while True:
        current, driver_id = await store.call(
            trip_key, "HMGET", trip_key, "status", "driver", what="read trip status"
        )
        if current is None:
            raise TripNotFound(trip_id)
        if status in ("requested", "assigned") and current != status:
            raise BadMove(current, status)
        now, _ = _now()
        driver_keys = [keys.driver_key(driver_id)] if driver_id else []
        reply = await TRIPS_SCRIPT(
            store,
            keys=[trip_key, keys.trip_doc_key(trip_id), *_region_keys(slot), *driver_keys],
            args=["move", config.flag, trip_id, status, now, driver_id or ""],
            what="change trip status",
        )
        if reply[0] != DRIVER_CHANGED:
            break
    if reply[0] == NOT_FOUND:
        raise TripNotFound(trip_id)
    if reply[0] == BAD_MOVE:
        raise BadMove(reply[1], status)
    return _document(reply[1])


async def read_path(*, store: RedisStore, config: TripsConfig, trip_id: str, path: str) -> Any:
    """Return the value at ``path`` in the trip document."""
    tokens = parse_path(path)
    reply = await TRIPS_SCRIPT(
        store,
        keys=[keys.trip_doc_key(trip_id)],
        args=["doc_get", config.flag, json.dumps(tokens)],
        what="read trip document path",
    )
    _check_doc(reply, trip_id, path)
    return json.loads(reply[1])


async def write_path(
    *, store: RedisStore, config: TripsConfig, trip_id: str, path: str, value: Any
) -> Any:
    """Set the value at ``path`` in the trip document, on the server in one step."""
    tokens = parse_path(path)
    if isinstance(tokens[0], str) and tokens[0] in MANAGED:
        raise ManagedPath(path, tokens[0])
    text = compact_json(value)
    reply = await TRIPS_SCRIPT(
        store,
        keys=[keys.trip_doc_key(trip_id)],
        args=["doc_set", config.flag, json.dumps(tokens), text, str(MAX_DOCUMENT_BYTES)],
        what="write trip document path",
    )
    _check_doc(reply, trip_id, path)
    return value


def _check_doc(reply: list[Any], trip_id: str, path: str) -> None:
    if reply[0] == NOT_FOUND:
        raise TripNotFound(trip_id)
    if reply[0] == PATH_NOT_FOUND:
        raise PathNotFound(path)
    if reply[0] == DOC_REFUSED:
        raise DocumentRefused(reply[1])


async def create_driver(
    *, store: RedisStore, config: TripsConfig, driver: DriverCreate
) -> DriverPublic:
    """Register an available driver in the region of their location."""
    region = keys.region_of(driver.location.lat, driver.location.lon, config.region_size_deg)
    driver_id = new_ulid(slot=keys.region_slot(region))
    key = keys.driver_key(driver_id)
    fields = {
        "name": driver.name,
        "car": driver.car,
        "status": "available",
        "region": region,
        "lat": repr(driver.location.lat),
        "lon": repr(driver.location.lon),
    }
    await store.call(
        key, "HSET", key, *(part for pair in fields.items() for part in pair), what="create driver"
    )
    return _driver(driver_id, fields)


def _driver(driver_id: str, fields: dict[str, str]) -> DriverPublic:
    return DriverPublic(
        id=driver_id,
        name=fields["name"],
        car=fields["car"],
        status=fields["status"],
        trip=fields.get("trip"),
        region=fields["region"],
        location=Point(lat=float(fields["lat"]), lon=float(fields["lon"])),
    )


async def read_driver(*, store: RedisStore, driver_id: str) -> DriverPublic:
    """Return a driver; raise DriverNotFound."""
    key = keys.driver_key(driver_id)
    fields: dict[str, str] = await store.call(key, "HGETALL", key, what="read driver")
    if not fields:
        raise DriverNotFound(driver_id)
    return _driver(driver_id, fields)


async def _regions(store: RedisStore) -> list[int]:
    members: set[str] = await store.run(lambda r: r.smembers(keys.REGISTRY), what="list regions")
    return sorted(int(member) for member in members)


async def _documents(
    store: RedisStore, config: TripsConfig, trip_ids: list[str]
) -> list[dict[str, Any]]:
    """Return the documents of these trips that are still requested, in the order given.

    One script call per slot reads all of that slot's documents, with a bounded number of calls
    in flight. The indexes change in the same step as the status; the check keeps a listing
    that raced an assignment from showing a trip taken meanwhile.
    """
    by_slot: dict[int, list[str]] = {}
    for trip_id in trip_ids:
        by_slot.setdefault(ulid_slot(trip_id), []).append(trip_id)
    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def read_slot(ids: list[str]) -> dict[str, dict[str, Any]]:
        async with gate:
            texts = await TRIPS_SCRIPT(
                store,
                keys=[keys.trip_doc_key(trip_id) for trip_id in ids],
                args=["docs", config.flag],
                what="read trips",
            )
        return {trip_id: _document(text) for trip_id, text in zip(ids, texts, strict=True) if text}

    found: dict[str, dict[str, Any]] = {}
    for part in await asyncio.gather(*(read_slot(ids) for ids in by_slot.values())):
        found.update(part)
    return [
        found[trip_id]
        for trip_id in trip_ids
        if trip_id in found and found[trip_id]["status"] == "requested"
    ]


async def oldest_pending(
    *, store: RedisStore, config: TripsConfig, limit: int
) -> list[dict[str, Any]]:
    """Return up to ``limit`` waiting requests across every region, oldest first."""

    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def oldest_in(slot: int) -> list[tuple[float, str]]:
        key = keys.pending_key(slot)
        async with gate:
            found: list[tuple[str, float]] = await store.call(
                key, "ZRANGE", key, 0, limit - 1, "WITHSCORES", what="read pending trips"
            )
        return [(float(score), trip_id) for trip_id, score in _pairs(found)]

    per_region = await asyncio.gather(*(oldest_in(slot) for slot in await _regions(store)))
    oldest = heapq.nsmallest(limit, (entry for region in per_region for entry in region))
    return await _documents(store, config, [trip_id for _score, trip_id in oldest])


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """Return a WITHSCORES reply (RESP3 pairs or a flat RESP2 list) as (member, score) pairs."""
    if reply and isinstance(reply[0], list | tuple):
        return [(str(member), float(score)) for member, score in reply]
    return [(str(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def regions_near(point: Point, radius_km: float, size_deg: float) -> list[str]:
    """Return the regions a circle around ``point`` touches (with a small margin)."""
    angle = min(math.pi, radius_km * SEARCH_MARGIN / EARTH_RADIUS_KM)
    lat_span = math.degrees(angle)
    south, north = max(-90.0, point.lat - lat_span), min(90.0, point.lat + lat_span)
    # The widest longitude span of the circle is at its edge nearest the pole.
    edge = math.radians(max(abs(south), abs(north)))
    if north >= 90 or south <= -90 or math.sin(angle) >= math.cos(edge):
        lon_span = 180.0
    else:
        lon_span = math.degrees(math.asin(math.sin(angle) / math.cos(edge)))
    lat_cells = range(math.floor(south / size_deg), math.floor(north / size_deg) + 1)
    if lon_span >= 180:
        lon_cells = range(math.floor(-180 / size_deg), math.floor(180 / size_deg))
    else:
        lon_cells = range(
            math.floor((point.lon - lon_span) / size_deg),
            math.floor((point.lon + lon_span) / size_deg) + 1,
        )
    cells = len(lat_cells) * len(lon_cells)
    if cells > MAX_REGIONS_PER_SEARCH:
        raise ValueError(f"the search touches {cells} regions; search a smaller radius")
    return sorted({f"{lat}:{_wrap(lon, size_deg)}" for lat in lat_cells for lon in lon_cells})


def _wrap(cell: int, size_deg: float) -> int:
    """Return a longitude cell index wrapped onto -180..180 degrees."""
    per_turn = round(360 / size_deg)
    return (cell + per_turn // 2) % per_turn - per_turn // 2


async def nearest_pending(
    *, store: RedisStore, config: TripsConfig, near: Point, radius_km: float, limit: int
) -> list[dict[str, Any]]:
    """Return up to ``limit`` waiting requests within ``radius_km`` of a point, nearest first."""
    slots = {
        keys.region_slot(region) for region in regions_near(near, radius_km, config.region_size_deg)
    }

    async def search(slot: int) -> list[tuple[float, str]]:
        key = keys.pending_geo_key(slot)
        found = await store.call(
            key,
            "GEOSEARCH",
            key,
            "FROMLONLAT",
            repr(keys.wrap_longitude(near.lon)),
            repr(near.lat),
            "BYRADIUS",
            repr(radius_km),
            "km",
            "ASC",
            "COUNT",
            limit,
            "WITHDIST",
            what="search pending trips",
        )
        return [(float(distance), str(trip_id)) for trip_id, distance in found]

    per_region = await asyncio.gather(*(search(slot) for slot in sorted(slots)))
    nearest = heapq.nsmallest(limit, {entry for region in per_region for entry in region})
    documents = {
        doc["id"]: doc
        for doc in await _documents(store, config, [trip_id for _d, trip_id in nearest])
    }
    return [
        {**documents[trip_id], "distance_km": round(distance, 3)}
        for distance, trip_id in nearest
        if trip_id in documents
    ]
