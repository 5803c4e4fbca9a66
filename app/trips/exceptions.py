"""Errors of trips and drivers."""

from app.errors import AppError, Conflict, NotFound


class TripNotFound(NotFound):
    def __init__(self, trip_id: str) -> None:
        super().__init__(f"Trip not found: {trip_id}")


class DriverNotFound(NotFound):
    def __init__(self, driver_id: str) -> None:
        super().__init__(f"Driver not found: {driver_id}")


class UnknownDriver(Conflict):
    """The driver a trip is to be given to does not exist (the trip itself does)."""

    def __init__(self, driver_id: str) -> None:
        super().__init__(f"Driver not found: {driver_id}")


class TripTaken(Conflict):
    def __init__(self, trip_id: str, status: str) -> None:
        super().__init__(f"Trip {trip_id} is {status}: only a requested trip can be assigned")


class DriverBusy(Conflict):
    def __init__(self, driver_id: str, trip_id: str) -> None:
        super().__init__(f"Driver {driver_id} is busy with trip {trip_id}")


class OutsideRegion(Conflict):
    def __init__(self, driver_region: str, trip_region: str) -> None:
        super().__init__(
            f"The driver works in region {driver_region} and the trip starts in region "
            f"{trip_region}: a driver takes trips of their own region"
        )


class BadMove(Conflict):
    def __init__(self, current: str, wanted: str) -> None:
        hint = " (assign a driver with POST /trips/{id}/assign)" if wanted == "assigned" else ""
        super().__init__(f"A trip cannot move from {current} to {wanted}{hint}")


class PathNotFound(NotFound):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"No value at {path} in the trip document (to add a member, its parent must exist; "
            "array indexes must be in range)"
        )


class MissingParent(Conflict):
    """A path whose parent is not in the trip document (RFC 5789: the structure the change
    assumes is not there, a conflict with the document's state)."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"No value at {path} in the trip document (to add a member, its parent must exist; "
            "array indexes must be in range)"
        )


class DocumentRefused(AppError):
    status_code = 422

    def __init__(self, why: str) -> None:
        super().__init__(f"The trip document cannot take this change: {why}")
