"""HTTP routes of Trip Management (/trips) and Driver Management (/drivers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.convertors import Convertor, register_url_convertor

from app.dependencies import RedisDep
from app.schemas import Message, Responses, ValidationFailed
from app.trips import service
from app.trips.schemas import (
    DocPath,
    DocUpdate,
    DocValue,
    DriverCreate,
    DriverId,
    DriverPublic,
    Near,
    PendingTrips,
    Trip,
    TripAssign,
    TripCreate,
    TripId,
    TripMove,
    near_point,
)
from app.trips.service import TripsConfig


class TripSegment(Convertor[str]):
    """A path segment after /trips/ that may name a trip: any but ``pending``, the listing's.

    So PATCH /trips/pending is a method /trips/pending lacks (405 with Allow), not a move of
    a trip called "pending"; any other text reaches the id's validation and its message.
    """

    regex = r"(?!pending\Z)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("trip_segment", TripSegment())

trips_router = APIRouter(prefix="/trips", tags=["trips"])
drivers_router = APIRouter(prefix="/drivers", tags=["drivers"])

TRIP_MISSING: Responses = {404: {"model": Message, "description": "No trip has this id"}}
DRIVER_MISSING: Responses = {404: {"model": Message, "description": "No driver has this id"}}
PATH_MISSING: Responses = {
    404: {"model": Message, "description": "No trip has this id, or no value is at the path"}
}
MOVE_CONFLICT: Responses = {
    **TRIP_MISSING,
    409: {
        "model": Message,
        "description": "The trip's status does not allow this move (a trip is assigned with "
        "POST /trips/{trip_id}/assign)",
    },
}
ASSIGN_CONFLICT: Responses = {
    **TRIP_MISSING,
    409: {
        "model": Message,
        "description": "The trip is not waiting, or the driver is unknown, busy or works in "
        "another region",
    },
}


def _trip_links(trip_id: str) -> dict[str, object]:
    """Return the OpenAPI links from an answer carrying a trip to the trip's operations."""
    parameters = {"trip_id": trip_id}
    return {
        name: {"operationId": operation, "parameters": parameters}
        for name, operation in (
            ("ReadTrip", "read_trip_trips__trip_id__get"),
            ("MoveTrip", "move_trip_trips__trip_id__patch"),
            ("AssignTrip", "assign_trip_trips__trip_id__assign_post"),
            ("ReadTripPath", "read_trip_path_trips__trip_id__doc_get"),
            ("UpdateTripPath", "update_trip_path_trips__trip_id__doc_patch"),
        )
    }


async def get_trips_config(request: Request) -> TripsConfig:
    """Return the trip settings the lifespan built (region size, native JSON or not)."""
    config: TripsConfig = request.state.trips
    return config


TripsDep = Annotated[TripsConfig, Depends(get_trips_config)]


@trips_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Request a trip",
    response_model_exclude_unset=True,
    responses={
        201: {
            "description": "The trip, requested and waiting for a driver",
            "links": _trip_links("$response.body#/id"),
        }
    },
)
async def create_trip(trip: TripCreate, store: RedisDep, config: TripsDep) -> Trip:
    """Request a trip: it waits in its pickup region's pending set until a driver takes it."""
    return await service.create_trip(store=store, config=config, trip=trip)


@trips_router.get(
    "/pending",
    summary="List waiting trips",
    response_model_exclude_unset=True,
    responses={200: {"description": "Waiting trips, oldest first or nearest first"}},
)
async def list_pending_trips(
    store: RedisDep,
    config: TripsDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many trips")] = 100,
    near: Annotated[
        Near | None,
        Query(
            description="lat,lon in degrees: list the trips within radius_km of this point, "
            "nearest first, with their distance"
        ),
    ] = None,
    radius_km: Annotated[
        float,
        Query(gt=0, le=500, description="The search radius around `near` (unused without it)"),
    ] = 5.0,
) -> PendingTrips:
    """List waiting requests: oldest first, or with ``near`` nearest first."""
    if near is None:
        trips = await service.oldest_pending(store=store, config=config, limit=limit)
    else:
        trips = await service.nearest_pending(
            store=store, config=config, near=near_point(near), radius_km=radius_km, limit=limit
        )
    return PendingTrips(trips=trips)


@trips_router.get(
    "/{trip_id:trip_segment}",
    summary="Read a trip",
    response_model_exclude_unset=True,
    responses=TRIP_MISSING,
)
async def read_trip(trip_id: TripId, store: RedisDep, config: TripsDep) -> Trip:
    """Return the trip as one JSON document."""
    return await service.read_trip(store=store, config=config, trip_id=trip_id)


@trips_router.post(
    "/{trip_id:trip_segment}/assign",
    summary="Assign a driver to a trip",
    response_model_exclude_unset=True,
    responses={
        **ASSIGN_CONFLICT,
        200: {
            "description": "The trip, assigned (also when this driver already had it)",
            "links": {
                "ReadDriver": {
                    "operationId": "read_driver_drivers__driver_id__get",
                    "parameters": {"driver_id": "$response.body#/driver/id"},
                },
                "MoveTrip": {
                    "operationId": "move_trip_trips__trip_id__patch",
                    "parameters": {"trip_id": "$response.body#/id"},
                },
            },
        },
    },
)
async def assign_trip(
    trip_id: TripId, assign: TripAssign, store: RedisDep, config: TripsDep
) -> Trip:
    """Give the trip to a driver: trip, driver and pending indexes change together or not at all."""
    return await service.assign_trip(
        store=store, config=config, trip_id=trip_id, driver_id=assign.driver_id
    )


@trips_router.patch(
    "/{trip_id:trip_segment}",
    summary="Change a trip's status",
    response_model_exclude_unset=True,
    responses={
        **MOVE_CONFLICT,
        200: {
            "description": "The trip, in its new status (a move to the status it has changes "
            "nothing)"
        },
    },
)
async def move_trip(trip_id: TripId, move: TripMove, store: RedisDep, config: TripsDep) -> Trip:
    """Move the trip along requested → assigned → in_progress → completed, or to cancelled."""
    return await service.move_trip(store=store, config=config, trip_id=trip_id, status=move.status)


@trips_router.get(
    "/{trip_id:trip_segment}/doc", summary="Read a value of a trip document", responses=PATH_MISSING
)
async def read_trip_path(
    trip_id: TripId,
    store: RedisDep,
    config: TripsDep,
    path: Annotated[DocPath, Query()],
) -> DocValue:
    """Return the value at a JSONPath of the trip document."""
    value = await service.read_path(store=store, config=config, trip_id=trip_id, path=path)
    return DocValue(path=path, value=value)


@trips_router.patch(
    "/{trip_id:trip_segment}/doc",
    summary="Set a value in a trip document",
    responses={
        **TRIP_MISSING,
        409: {
            "model": Message,
            "description": "The path's parent is not in the document (a member is added to an "
            "object that exists), or an index is out of range",
        },
        422: {
            "model": ValidationFailed,
            "description": "The request breaks the schema, or the document would exceed its "
            "size limit",
        },
    },
)
async def update_trip_path(
    trip_id: TripId, update: DocUpdate, store: RedisDep, config: TripsDep
) -> DocValue:
    """Set the value at a JSONPath of the trip document, atomically on the server."""
    value = await service.write_path(
        store=store, config=config, trip_id=trip_id, path=update.path, value=update.value
    )
    return DocValue(path=update.path, value=value)


@drivers_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a driver",
    responses={
        201: {
            "description": "The driver, available",
            "links": {
                "ReadDriver": {
                    "operationId": "read_driver_drivers__driver_id__get",
                    "parameters": {"driver_id": "$response.body#/id"},
                }
            },
        }
    },
)
async def create_driver(driver: DriverCreate, store: RedisDep, config: TripsDep) -> DriverPublic:
    """Register an available driver in the region of their location."""
    return await service.create_driver(store=store, config=config, driver=driver)


@drivers_router.get("/{driver_id}", summary="Read a driver", responses=DRIVER_MISSING)
async def read_driver(driver_id: DriverId, store: RedisDep) -> DriverPublic:
    """Return a driver: name, car, status and the trip they are on."""
    return await service.read_driver(store=store, driver_id=driver_id)
