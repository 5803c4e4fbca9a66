"""HTTP routes of Trip Management (/trips) and Driver Management (/drivers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.dependencies import RedisDep
from app.errors import AppError
from app.schemas import Message
from app.trips import service
from app.trips.schemas import (
    DocPath,
    Document,
    DocUpdate,
    DocValue,
    DriverCreate,
    DriverPublic,
    GeoPoint,
    Id,
    PendingTrips,
    TripAssign,
    TripCreate,
    TripMove,
)
from app.trips.service import TripsConfig

trips_router = APIRouter(prefix="/trips", tags=["trips"])
drivers_router = APIRouter(prefix="/drivers", tags=["drivers"])
MISSING: dict[int | str, dict[str, object]] = {404: {"model": Message}}
CONFLICT: dict[int | str, dict[str, object]] = {404: {"model": Message}, 409: {"model": Message}}


class BadQuery(AppError):
    status_code = 422


async def get_trips_config(request: Request) -> TripsConfig:
    """Return the trip settings the lifespan built (region size, native JSON or not)."""
    config: TripsConfig = request.state.trips
    return config


TripsDep = Annotated[TripsConfig, Depends(get_trips_config)]


def _point(text: str) -> GeoPoint:
    try:
        lat, lon = (float(part) for part in text.split(","))
        return GeoPoint(lat=lat, lon=lon)
    except ValueError:
        raise BadQuery(
            "Invalid query parameter 'near': give lat,lon in degrees (latitude within "
            "±85.05112878), such as near=38.72,-9.14"
        ) from None


@trips_router.post("", status_code=status.HTTP_201_CREATED)
async def create_trip(trip: TripCreate, store: RedisDep, config: TripsDep) -> Document:
    """Request a trip: it waits in its pickup region's pending set until a driver takes it."""
    return await service.create_trip(store=store, config=config, trip=trip)


@trips_router.get("/pending")
async def list_pending_trips(
    store: RedisDep,
    config: TripsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    near: Annotated[str | None, Query(max_length=64, description="lat,lon")] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=500)] = None,
) -> PendingTrips:
    """List waiting requests: oldest first, or with ``near`` and ``radius_km`` nearest first."""
    if near is None:
        if radius_km is not None:
            raise BadQuery("Invalid query parameter 'radius_km': it needs near=lat,lon")
        trips = await service.oldest_pending(store=store, config=config, limit=limit)
        return PendingTrips(trips=trips)
    try:
        trips = await service.nearest_pending(
            store=store,
            config=config,
            near=_point(near),
            radius_km=radius_km or 5.0,
            limit=limit,
        )
    except ValueError as exc:
        raise BadQuery(f"Invalid query parameter 'radius_km': {exc}") from None
    return PendingTrips(trips=trips)


@trips_router.get("/{trip_id}", responses=MISSING)
async def read_trip(trip_id: Id, store: RedisDep, config: TripsDep) -> Document:
    """Return the trip as one JSON document."""
    return await service.read_trip(store=store, config=config, trip_id=trip_id)


@trips_router.post("/{trip_id}/assign", responses=CONFLICT)
async def assign_trip(
    trip_id: Id, assign: TripAssign, store: RedisDep, config: TripsDep
) -> Document:
    """Give the trip to a driver: trip, driver and pending indexes change together or not at all."""
    return await service.assign_trip(
        store=store, config=config, trip_id=trip_id, driver_id=assign.driver_id
    )


@trips_router.patch("/{trip_id}", responses=CONFLICT)
async def move_trip(trip_id: Id, move: TripMove, store: RedisDep, config: TripsDep) -> Document:
    """Move the trip along requested → assigned → in_progress → completed, or to cancelled."""
    return await service.move_trip(store=store, config=config, trip_id=trip_id, status=move.status)


@trips_router.get("/{trip_id}/doc", responses=MISSING)
async def read_trip_path(
    trip_id: Id,
    store: RedisDep,
    config: TripsDep,
    path: Annotated[DocPath, Query(description="such as $.fare.total")],
) -> DocValue:
    """Return the value at a JSONPath of the trip document."""
    value = await service.read_path(store=store, config=config, trip_id=trip_id, path=path)
    return DocValue(path=path, value=value)


@trips_router.patch("/{trip_id}/doc", responses=MISSING)
async def update_trip_path(
    trip_id: Id, update: DocUpdate, store: RedisDep, config: TripsDep
) -> DocValue:
    """Set the value at a JSONPath of the trip document, atomically on the server."""
    value = await service.write_path(
        store=store, config=config, trip_id=trip_id, path=update.path, value=update.value
    )
    return DocValue(path=update.path, value=value)


@drivers_router.post("", status_code=status.HTTP_201_CREATED)
async def create_driver(driver: DriverCreate, store: RedisDep, config: TripsDep) -> DriverPublic:
    """Register an available driver in the region of their location."""
    return await service.create_driver(store=store, config=config, driver=driver)


@drivers_router.get("/{driver_id}", responses=MISSING)
async def read_driver(driver_id: Id, store: RedisDep) -> DriverPublic:
    """Return a driver: name, car, status and the trip they are on."""
    return await service.read_driver(store=store, driver_id=driver_id)
