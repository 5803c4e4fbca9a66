"""Request and response shapes of trips and drivers."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from app.records.codec import JSON, check_text, dump_json
from app.records.ids import check_message_id
from app.schemas import Schema

Status = Literal["requested", "assigned", "in_progress", "completed", "cancelled"]
Id = Annotated[str, AfterValidator(check_message_id)]
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
MAX_PATH_LENGTH = 512
MAX_PATH_DEPTH = 32
MAX_VALUE_LENGTH = 64 * 1024


# A trip as one JSON document: the members the trip API manages and any a client adds.
Document = dict[str, JSON]


def check_value(value: JSON) -> JSON:
    """Return ``value`` if it can be stored in a trip document (finite, valid Unicode, 64 KiB)."""
    if len(dump_json(value)) > MAX_VALUE_LENGTH:
        raise ValueError(f"a value is at most {MAX_VALUE_LENGTH} characters of JSON")
    return value


# Redis's geo index holds latitudes up to this (the Web Mercator limit).
MAX_GEO_LATITUDE = 85.05112878


class Point(Schema):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]


class GeoPoint(Point):
    """A point the geo index can hold: latitudes within ±85.05112878 degrees."""

    lat: Annotated[float, Field(ge=-MAX_GEO_LATITUDE, le=MAX_GEO_LATITUDE)]


class TripCreate(Schema):
    """A ride request: who asks, where from, where to."""

    requester: Text
    pickup: GeoPoint
    dropoff: Point


class TripMove(Schema):
    status: Status


class TripAssign(Schema):
    driver_id: Id


class DriverCreate(Schema):
    """A driver, their car, and where they work (the region of that point)."""

    name: Text
    car: Text
    location: Point


class DriverPublic(Schema):
    id: str
    name: str
    car: str
    status: Literal["available", "busy"]
    trip: str | None = None
    region: str
    location: Point


class PendingTrips(Schema):
    """Waiting requests: oldest first, or nearest first with their distance."""

    trips: list[Document]


_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d{1,9})\]|\[\"((?:[^\"\\]|\\.)*)\"\]")


def parse_path(path: str) -> list[str | int]:
    """Return a JSONPath of one value (``$.fare.total``, ``$.stops[0]``, ``$["a b"]``) as
    tokens; raise ValueError naming what is wrong. Wildcards and filters are not accepted."""
    if len(path) > MAX_PATH_LENGTH or not path.startswith("$"):
        raise ValueError(f"a path starts with $ and has at most {MAX_PATH_LENGTH} characters")
    tokens: list[str | int] = []
    position = 1
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if match is None:
            raise ValueError(
                f"cannot read the path at character {position}: use .name, [index] or "
                '["name"] segments'
            )
        name, index, quoted = match.groups()
        if index is not None:
            tokens.append(int(index))
        elif quoted is not None:
            name = check_text(quoted.replace('\\"', '"').replace("\\\\", "\\"))
            if any(ord(char) < 32 for char in name) or name.endswith("\\"):
                raise ValueError("a quoted name may not hold control characters or end in \\")
            tokens.append(name)
        else:
            tokens.append(name)
        position = match.end()
    if not tokens:
        raise ValueError("the path names the whole document: name a member, such as $.notes")
    if len(tokens) > MAX_PATH_DEPTH:
        raise ValueError(f"a path has at most {MAX_PATH_DEPTH} segments")
    return tokens


def _check_path(path: str) -> str:
    parse_path(path)
    return path


DocPath = Annotated[str, AfterValidator(_check_path)]


class DocUpdate(Schema):
    """Set the value at ``path`` in the trip document (any JSON value)."""

    path: DocPath
    value: Annotated[JSON, AfterValidator(check_value)]


class DocValue(Schema):
    path: str
    value: JSON
