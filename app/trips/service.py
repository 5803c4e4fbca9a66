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
from enum import IntEnum
from pathlib import Path
from typing import Literal, NamedTuple

from redis import exceptions as rexc

from app.records.codec import JSON, compact_json
from app.records.ids import new_ulid, ulid_slot
from app.redis import RedisStore
from app.scripting import (
    LuaScript,
    OutcomeErrors,
    ScriptContractError,
    as_list,
    as_optional_str,
    as_str_list,
    outcome_of,
    raise_for,
)
from app.trips import keys, metrics
from app.trips.exceptions import (
    BadMove,
    DocumentRefused,
    DriverBusy,
    DriverNotFound,
    MissingParent,
    OutsideRegion,
    PathNotFound,
    TripNotFound,
    TripTaken,
    UnknownDriver,
)
from app.trips.schemas import (
    DriverCreate,
    DriverPublic,
    PendingTrip,
    Point,
    Status,
    Trip,
    TripCreate,
    parse_path,
)

TRIPS_SCRIPT = LuaScript.load(Path(__file__).with_name("trips.lua"))
# A trip document's size limit (plain Redis: each edit rewrites the whole text on the server).
MAX_DOCUMENT_BYTES = 1024 * 1024
# Reads in flight at once for a listing: below the client's per-node connection pool.
MAX_CONCURRENT_READS = 32
# Redis's geo commands use this earth radius; the region search must not cover less than they do.
EARTH_RADIUS_KM = 6372.797560856
# Cells are chosen with this much room around the circle.
SEARCH_MARGIN = 1.01
MAX_REGIONS_PER_SEARCH = 400
# A trip document as stored: the members of ``Trip`` and any a client added.
Document = dict[str, JSON]


class TripOutcome(IntEnum):
    """What a step of ``trips.lua`` answered first (the script declares the same codes)."""

    DONE = 1
    NOT_FOUND = -1
    DRIVER_NOT_FOUND = -2
    TRIP_TAKEN = -3
    DRIVER_BUSY = -4
    BAD_MOVE = -5
    PATH_NOT_FOUND = -6
    OUTSIDE_REGION = -7
    # The trip's driver is not the one the caller read (assigned since): not a failure, the
    # caller declares the driver's key and tries again.
    DRIVER_CHANGED = -8
    DOC_REFUSED = -9


# The steps of ``trips.lua`` that answer an outcome first ("docs" answers the texts alone).
StepName = Literal["create", "assign", "move", "doc_get", "doc_set"]


class Step(NamedTuple):
    """What a step of ``trips.lua`` concerns: the ids, status and path its errors name."""

    name: StepName
    trip_id: str
    driver_id: str = ""
    status: str = ""
    path: str = ""


class StepAnswer(NamedTuple):
    """A step's outcome and the rest of its answer."""

    outcome: TripOutcome
    # When done: the JSON text of the document, or of the value at a path. When refused: what
    # the refusal names (a status, a trip, two regions, the server's reason).
    details: list[str]

    @property
    def text(self) -> str:
        """Return the JSON text a step that is done answers."""
        if self.outcome is not TripOutcome.DONE or len(self.details) != 1:
            raise ScriptContractError(f"expected a done step's JSON text, got {self}")
        return self.details[0]


# The error each failing outcome of ``trips.lua`` means, made from the step and what the
# script named.
STEP_ERRORS: OutcomeErrors[TripOutcome, [Step, list[str]]] = {
    TripOutcome.NOT_FOUND: lambda step, _named: TripNotFound(step.trip_id),
    # Only assigning names a driver: the trip is there, the driver the body names is not.
    TripOutcome.DRIVER_NOT_FOUND: lambda step, _named: UnknownDriver(step.driver_id),
    TripOutcome.TRIP_TAKEN: lambda step, named: TripTaken(step.trip_id, named[0]),
    TripOutcome.DRIVER_BUSY: lambda step, named: DriverBusy(step.driver_id, named[0]),
    TripOutcome.BAD_MOVE: lambda step, named: BadMove(named[0], step.status),
    TripOutcome.PATH_NOT_FOUND: lambda step, _named: (
        MissingParent(step.path) if step.name == "doc_set" else PathNotFound(step.path)
    ),
    TripOutcome.OUTSIDE_REGION: lambda _step, named: OutsideRegion(named[0], named[1]),
    TripOutcome.DOC_REFUSED: lambda _step, named: DocumentRefused(named[0]),
}


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
        await store.call(probe, "JSON.GET", probe, what="probe JSON commands", probe=True)
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


async def _run_step(
    store: RedisStore,
    config: TripsConfig,
    step: Step,
    *,
    script_keys: list[str],
    args: list[str],
    what: str,
) -> StepAnswer:
    """Run one step of ``trips.lua``; raise the error a failing outcome means."""
    code, *named = as_list(
        await TRIPS_SCRIPT(store, keys=script_keys, args=[step.name, config.flag, *args], what=what)
    )
    answer = StepAnswer(outcome_of(TripOutcome, code), as_str_list(named))
    raise_for(answer.outcome, STEP_ERRORS, step, answer.details)
    return answer


async def _read_texts(
    store: RedisStore, config: TripsConfig, trip_ids: list[str]
) -> list[str | None]:
    """Return the document texts of trips that share one slot, None for a missing one."""
    texts = await TRIPS_SCRIPT(
        store,
        keys=[keys.trip_doc_key(trip_id) for trip_id in trip_ids],
        args=["docs", config.flag],
        what="read trips",
    )
    return [as_optional_str(text) for text in as_list(texts)]


async def create_trip(*, store: RedisStore, config: TripsConfig, trip: TripCreate) -> Trip:
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
    answer = await _run_step(
        store,
        config,
        Step("create", trip_id),
        script_keys=[keys.trip_key(trip_id), keys.trip_doc_key(trip_id), *_region_keys(slot)],
        args=[
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
    return _trip(answer.text)


def _document(text: str) -> Document:
    parsed = json.loads(text)
    # Native JSON.GET of the root answers the document itself; with a "$" path, a list of one.
    if isinstance(parsed, list):
        parsed = parsed[0]
    document: Document = parsed
    return document


def _trip(text: str) -> Trip:
    return Trip.model_validate(_document(text))


async def read_trip(*, store: RedisStore, config: TripsConfig, trip_id: str) -> Trip:
    """Return the trip document; raise TripNotFound."""
    key = keys.trip_doc_key(trip_id)
    command = ("JSON.GET", key) if config.native_json else ("GET", key)
    text: str | None = await store.call(key, *command, what="read trip")
    if text is None:
        raise TripNotFound(trip_id)
    return _trip(text)


async def assign_trip(
    *, store: RedisStore, config: TripsConfig, trip_id: str, driver_id: str
) -> Trip:
    """Give a requested trip to an available driver of its region, all at once; raise
    TripNotFound, or UnknownDriver when the trip is there but the driver is not."""
    trip_slot, driver_slot = ulid_slot(trip_id), ulid_slot(driver_id)
    if trip_slot != driver_slot:
        trip = await read_trip(store=store, config=config, trip_id=trip_id)
        try:
            driver = await read_driver(store=store, driver_id=driver_id)
        except DriverNotFound:
            raise UnknownDriver(driver_id) from None
        raise OutsideRegion(driver.region, trip.region)
    now, _ = _now()
    try:
        answer = await _run_step(
            store,
            config,
            Step("assign", trip_id, driver_id=driver_id),
            script_keys=[
                keys.trip_key(trip_id),
                keys.trip_doc_key(trip_id),
                *_region_keys(trip_slot),
                keys.driver_key(driver_id),
            ],
            args=[trip_id, driver_id, now],
            what="assign trip",
        )
    except (TripTaken, DriverBusy):
        metrics.CONFLICTS.inc()
        raise
    metrics.ASSIGNED.inc()
    return _trip(answer.text)


async def move_trip(
    *, store: RedisStore, config: TripsConfig, trip_id: str, status: Status
) -> Trip:
    """Move a trip along requested → assigned → in_progress → completed, or to cancelled.

    A move to the status the trip already has changes nothing and answers the trip, so a
    repeated request is safe.
    """
    slot = ulid_slot(trip_id)
    trip_key = keys.trip_key(trip_id)
    while True:
        current: str | None
        driver_id: str | None
        current, driver_id = await store.call(
            trip_key, "HMGET", trip_key, "status", "driver", what="read trip status"
        )
        if current is None:
            raise TripNotFound(trip_id)
        if status in ("requested", "assigned") and current != status:
            raise BadMove(current, status)
        now, _ = _now()
        driver_keys = [keys.driver_key(driver_id)] if driver_id else []
        answer = await _run_step(
            store,
            config,
            Step("move", trip_id, status=status),
            script_keys=[trip_key, keys.trip_doc_key(trip_id), *_region_keys(slot), *driver_keys],
            args=[trip_id, status, now, driver_id or ""],
            what="change trip status",
        )
        if answer.outcome is not TripOutcome.DRIVER_CHANGED:
            return _trip(answer.text)


async def read_path(*, store: RedisStore, config: TripsConfig, trip_id: str, path: str) -> JSON:
    """Return the value at ``path`` in the trip document."""
    tokens = parse_path(path)
    answer = await _run_step(
        store,
        config,
        Step("doc_get", trip_id, path=path),
        script_keys=[keys.trip_doc_key(trip_id)],
        args=[json.dumps(tokens)],
        what="read trip document path",
    )
    return json.loads(answer.text)


async def write_path(
    *, store: RedisStore, config: TripsConfig, trip_id: str, path: str, value: JSON
) -> JSON:
    """Set the value at ``path`` (not under a member the trip API manages: ``DocUpdate``
    refuses those) in the trip document, on the server in one step."""
    tokens = parse_path(path)
    await _run_step(
        store,
        config,
        Step("doc_set", trip_id, path=path),
        script_keys=[keys.trip_doc_key(trip_id)],
        args=[json.dumps(tokens), compact_json(value), str(MAX_DOCUMENT_BYTES)],
        what="write trip document path",
    )
    return value


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


async def _documents(store: RedisStore, config: TripsConfig, trip_ids: list[str]) -> list[Document]:
    """Return the documents of these trips that are still requested, in the order given.

    One script call per slot reads all of that slot's documents, with a bounded number of calls
    in flight. The indexes change in the same step as the status; the check keeps a listing
    that raced an assignment from showing a trip taken meanwhile.
    """
    by_slot: dict[int, list[str]] = {}
    for trip_id in trip_ids:
        by_slot.setdefault(ulid_slot(trip_id), []).append(trip_id)
    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def read_slot(ids: list[str]) -> dict[str, Document]:
        async with gate:
            texts = await _read_texts(store, config, ids)
        return {trip_id: _document(text) for trip_id, text in zip(ids, texts, strict=True) if text}

    found: dict[str, Document] = {}
    for part in await asyncio.gather(*(read_slot(ids) for ids in by_slot.values())):
        found.update(part)
    return [
        found[trip_id]
        for trip_id in trip_ids
        if trip_id in found and found[trip_id]["status"] == "requested"
    ]


async def oldest_pending(
    *, store: RedisStore, config: TripsConfig, limit: int
) -> list[PendingTrip]:
    """Return up to ``limit`` waiting requests across every region, oldest first."""

    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def oldest_in(slot: int) -> list[tuple[float, str]]:
        key = keys.pending_key(slot)
        async with gate:
            found: list[object] = await store.call(
                key, "ZRANGE", key, 0, limit - 1, "WITHSCORES", what="read pending trips"
            )
        return [(float(score), trip_id) for trip_id, score in _pairs(found)]

    per_region = await asyncio.gather(*(oldest_in(slot) for slot in await _regions(store)))
    oldest = heapq.nsmallest(limit, (entry for region in per_region for entry in region))
    documents = await _documents(store, config, [trip_id for _score, trip_id in oldest])
    return [_pending(document) for document in documents]


def _pending(document: Document, distance_km: float | None = None) -> PendingTrip:
    """Return a waiting trip, with the distance a search measured (a ``distance_km`` a client
    stored before the name was reserved is not one)."""
    members = {name: value for name, value in document.items() if name != "distance_km"}
    if distance_km is not None:
        members["distance_km"] = distance_km
    return PendingTrip.model_validate(members)


def _pairs(reply: list[object]) -> list[tuple[str, float]]:
    """Return a WITHSCORES reply (RESP3 pairs or a flat RESP2 list) as (member, score) pairs."""
    flat = [
        part for item in reply for part in (item if isinstance(item, list | tuple) else (item,))
    ]
    # A RESP3 score arrives as a float, a RESP2 one as text: str() reads both back exactly.
    return [
        (str(member), float(str(score)))
        for member, score in zip(flat[::2], flat[1::2], strict=True)
    ]


def regions_near(point: Point, radius_km: float, size_deg: float) -> list[str]:
    """Return the regions a circle around ``point`` touches (with a small margin); raise
    ValueError when they are more than MAX_REGIONS_PER_SEARCH."""
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
) -> list[PendingTrip]:
    """Return up to ``limit`` waiting requests within ``radius_km`` of a point, nearest first.

    The search asks the regions the circle touches; a circle that touches more (a wide one,
    near a pole, or over small regions) asks every region that ever held a waiting trip.
    """
    try:
        regions = regions_near(near, radius_km, config.region_size_deg)
        slots = {keys.region_slot(region) for region in regions}
    except ValueError:
        slots = set(await _regions(store))
    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def search(slot: int) -> list[tuple[float, str]]:
        key = keys.pending_geo_key(slot)
        async with gate:
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
        _pending(documents[trip_id], distance_km=round(distance, 3))
        for distance, trip_id in nearest
        if trip_id in documents
    ]
