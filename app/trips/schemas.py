"""Request and response shapes of trips and drivers.

Each rule the server enforces is stated in the schema: where a check names what is wrong better
than a bare pattern would (ids, document paths, ``near``), the check stays and the schema
carries a pattern that accepts exactly what the check accepts (``tests/trips/test_contract.py``
holds them to it).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from app.records.codec import JSON, MAX_JSON_DEPTH, check_text, dump_json
from app.records.ids import ULID_PATTERN, check_message_id
from app.schemas import Schema

Status = Literal["requested", "assigned", "in_progress", "completed", "cancelled"]
MAX_PATH_LENGTH = 512
MAX_PATH_DEPTH = 32
MAX_VALUE_LENGTH = 64 * 1024
MAX_TEXT_LENGTH = 200
MAX_NEAR_LENGTH = 64

TRIP_EXAMPLE = "01M84CEZWMS4HTM0M9W38ZZ28P"
DRIVER_EXAMPLE = "01M84CF01814RF4HDB8T2N228P"


def _ulid_schema(what: str, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": ULID_PATTERN,
            "description": f"The {what}'s id: a ULID, which carries the hash slot of its region",
            "examples": [example],
        }
    )


TripId = Annotated[str, AfterValidator(check_message_id), _ulid_schema("trip", TRIP_EXAMPLE)]
DriverId = Annotated[str, AfterValidator(check_message_id), _ulid_schema("driver", DRIVER_EXAMPLE)]
Text = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH, strict=True),
    AfterValidator(check_text),
]
Stamp = Annotated[
    str,
    Field(
        description="When it happened (UTC, milliseconds)",
        json_schema_extra={"format": "date-time"},
        examples=["2026-11-23T14:20:21.780Z"],
    ),
]


def check_value(value: JSON) -> JSON:
    """Return ``value`` if it can be stored in a trip document (finite, valid Unicode, 64 KiB)."""
    if len(dump_json(value)) > MAX_VALUE_LENGTH:
        raise ValueError(f"a value is at most {MAX_VALUE_LENGTH} characters of JSON")
    return value


# Redis's geo index holds latitudes up to this (the Web Mercator limit).
MAX_GEO_LATITUDE = 85.05112878
Degrees = Annotated[float, Field(strict=True)]


class Point(Schema):
    """A point in degrees (a number: a string or a boolean is refused)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"lat": 38.7742, "lon": -9.1342}]})

    lat: Annotated[Degrees, Field(ge=-90, le=90)]
    lon: Annotated[Degrees, Field(ge=-180, le=180)]


class GeoPoint(Point):
    """A point the geo index can hold: latitudes within ±85.05112878 degrees."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"lat": 38.7223, "lon": -9.1393}]})

    lat: Annotated[Degrees, Field(ge=-MAX_GEO_LATITUDE, le=MAX_GEO_LATITUDE)]


# ``near=lat,lon``: two decimals (digits, an optional fraction, an optional minus sign), the
# latitude within ±85.05112878 and the longitude within ±180, spelled out digit by digit so
# that a pattern says it.
_UNDER_85_05112878 = (
    r"(?:[0-9]|[1-7][0-9]|8[0-4])(?:\.[0-9]+)?"
    r"|85(?:\.0(?:[0-4][0-9]*|5(?:0[0-9]*|1(?:0[0-9]*|1(?:[01][0-9]*|2(?:[0-7][0-9]*"
    r"|8(?:[0-6][0-9]*|7(?:[0-7][0-9]*|80*)?)?)?)?)?)?)?)?"
)
_UNDER_180 = r"(?:[0-9]|[1-9][0-9]|1[0-7][0-9])(?:\.[0-9]+)?|180(?:\.0+)?"
NEAR_PATTERN = rf"^-?(?:{_UNDER_85_05112878}),-?(?:{_UNDER_180})$"
_NEAR = re.compile(NEAR_PATTERN.removeprefix("^").removesuffix("$"))


def check_near(text: str) -> str:
    """Return ``text`` if it is ``lat,lon`` in degrees; else raise ValueError naming why."""
    if len(text) > MAX_NEAR_LENGTH or _NEAR.fullmatch(text) is None:
        raise ValueError(
            "give lat,lon in degrees (latitude within ±85.05112878, longitude within ±180, "
            f"at most {MAX_NEAR_LENGTH} characters), such as near=38.72,-9.14"
        )
    return text


def near_point(text: str) -> GeoPoint:
    """Return the point of a ``near`` that ``check_near`` accepted."""
    lat, lon = text.split(",")
    return GeoPoint(lat=float(lat), lon=float(lon))


Near = Annotated[
    str,
    AfterValidator(check_near),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_NEAR_LENGTH,
            "pattern": NEAR_PATTERN,
            "examples": ["38.71,-9.15"],
        }
    ),
]


class TripCreate(Schema):
    """A ride request: who asks, where from, where to."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "requester": "ana",
                    "pickup": {"lat": 38.7223, "lon": -9.1393},
                    "dropoff": {"lat": 38.7742, "lon": -9.1342},
                }
            ]
        }
    )

    requester: Text
    pickup: GeoPoint
    dropoff: Point


class TripMove(Schema):
    """The status to move the trip to."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "in_progress"}]})

    status: Status


class TripAssign(Schema):
    """The driver to give the trip to: an available driver of the trip's region."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"driver_id": DRIVER_EXAMPLE}]})

    driver_id: DriverId


# From the walkthrough (docs/walkthrough.md): a trip requested, then assigned to Rui. (The
# published schema leaves out null members of examples: FastAPI writes it without nulls.)
REQUESTED_EXAMPLE: JsonDict = {
    "id": TRIP_EXAMPLE,
    "requester": "ana",
    "pickup": {"lat": 38.7223, "lon": -9.1393},
    "dropoff": {"lat": 38.7742, "lon": -9.1342},
    "region": "38:-10",
    "status": "requested",
    "driver": None,
    "created_at": "2026-11-23T14:20:21.780Z",
}
ASSIGNED_EXAMPLE: JsonDict = {
    **REQUESTED_EXAMPLE,
    "status": "assigned",
    "driver": {"id": DRIVER_EXAMPLE, "name": "Rui", "car": "Tesla Model 3, AB-12-CD"},
    "notes": {"bags": 2},
    "assigned_at": "2026-11-23T14:20:22.095Z",
}
NEAREST_EXAMPLE: JsonDict = {**REQUESTED_EXAMPLE, "distance_km": 1.653}


class TripDriver(Schema):
    """The driver of an assigned trip, and their car."""

    id: DriverId
    name: str
    car: str


class Trip(Schema):
    """A trip as one JSON document: the members the trip API manages, and any member a client
    added with PATCH /trips/{trip_id}/doc."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [ASSIGNED_EXAMPLE]},
    )

    id: TripId
    requester: str
    pickup: GeoPoint
    dropoff: Point
    region: Annotated[
        str, Field(description="The grid cell of the pickup (latitude:longitude cell)")
    ]
    status: Status
    driver: TripDriver | None = Field(description="Null until a driver is assigned")
    created_at: Stamp
    # Set by the status changes; absent (never null) until then: the routes leave out unset
    # members.
    assigned_at: Stamp | SkipJsonSchema[None] = None
    in_progress_at: Stamp | SkipJsonSchema[None] = None
    completed_at: Stamp | SkipJsonSchema[None] = None
    cancelled_at: Stamp | SkipJsonSchema[None] = None


class PendingTrip(Trip):
    """A waiting request; with ``near``, its distance from that point."""

    model_config = ConfigDict(json_schema_extra={"examples": [NEAREST_EXAMPLE]})

    distance_km: float | SkipJsonSchema[None] = Field(
        default=None, description="Distance from `near`, in kilometres (only with `near`)"
    )


class DriverCreate(Schema):
    """A driver, their car, and where they work (the region of that point)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Rui",
                    "car": "Tesla Model 3, AB-12-CD",
                    "location": {"lat": 38.71, "lon": -9.15},
                }
            ]
        }
    )

    name: Text
    car: Text
    location: Point


class DriverPublic(Schema):
    """A driver: available, or busy with the trip they are on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": DRIVER_EXAMPLE,
                    "name": "Rui",
                    "car": "Tesla Model 3, AB-12-CD",
                    "status": "busy",
                    "trip": TRIP_EXAMPLE,
                    "region": "38:-10",
                    "location": {"lat": 38.71, "lon": -9.15},
                }
            ]
        }
    )

    id: DriverId
    name: str
    car: str
    status: Literal["available", "busy"]
    trip: TripId | None = None
    region: str
    location: Point


class PendingTrips(Schema):
    """Waiting requests: oldest first, or nearest first with their distance."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"trips": [NEAREST_EXAMPLE]}]})

    trips: list[PendingTrip]


# Members of the trip document that only the trip API changes, and the listing's distance.
MANAGED = frozenset(
    {"id", "requester", "pickup", "dropoff", "region", "status", "driver", "created_at"}
    | {f"{status}_at" for status in ("assigned", "in_progress", "completed", "cancelled")}
    | {"distance_km"}
)

_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]{1,9})\]|\[\"((?:[^\"\\]|\\.)*)\"\]")

# The paths ``parse_path`` reads. A quoted name holds no control characters, and its last
# character is not an escaped backslash (the name would end in one).
_PLAIN = r'[^"\\\x00-\x1f]'
_QUOTED = rf'\["(?:(?:{_PLAIN}|\\[^\x00-\x1f])*(?:{_PLAIN}|\\[^\\\x00-\x1f]))?"\]'
DOC_PATH_PATTERN = (
    rf"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]{{1,9}}\]|{_QUOTED}){{1,{MAX_PATH_DEPTH}}}$"
)
_MANAGED_NAMES = "|".join(sorted(MANAGED))
# The paths under a member the trip API manages (quoted or not).
MANAGED_PATH_PATTERN = rf'^\$(?:\.(?:{_MANAGED_NAMES})(?:[.\[]|$)|\["(?:{_MANAGED_NAMES})"\])'


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


def _check_writable(path: str) -> str:
    first = parse_path(path)[0]
    if isinstance(first, str) and first in MANAGED:
        raise ValueError(
            f"{path} is under '{first}', which the trip API manages (status changes go through "
            "PATCH /trips/{id} and POST /trips/{id}/assign)"
        )
    return path


_PATH_SCHEMA = {
    "type": "string",
    "maxLength": MAX_PATH_LENGTH,
    "pattern": DOC_PATH_PATTERN,
    "description": 'A JSONPath of one value: $ then .name, [index] or ["quoted name"] '
    f"segments (at most {MAX_PATH_DEPTH}), such as $.fare.total, $.stops[0], "
    '$["child seat"]',
}
DocPath = Annotated[
    str, AfterValidator(_check_path), WithJsonSchema({**_PATH_SCHEMA, "examples": ["$.driver"]})
]
WritablePath = Annotated[
    str,
    AfterValidator(_check_writable),
    WithJsonSchema(
        {
            **_PATH_SCHEMA,
            "description": f"{_PATH_SCHEMA['description']}. Not under a member the trip API "
            f"manages ({', '.join(sorted(MANAGED))})",
            "not": {"pattern": MANAGED_PATH_PATTERN},
            "examples": ["$.notes"],
        }
    ),
]


class DocUpdate(Schema):
    """Set the value at ``path`` in the trip document (any JSON value)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"path": "$.notes", "value": {"bags": 2}}]}
    )

    path: WritablePath
    value: Annotated[
        JSON,
        Field(
            description=f"Any JSON value: at most {MAX_VALUE_LENGTH} characters as compact JSON, "
            f"nested at most {MAX_JSON_DEPTH} arrays or objects deep"
        ),
        AfterValidator(check_value),
    ]


class DocValue(Schema):
    """The value at a path of the trip document."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"path": "$.notes", "value": {"bags": 2}},
                {
                    "path": "$.driver",
                    "value": {
                        "id": DRIVER_EXAMPLE,
                        "name": "Rui",
                        "car": "Tesla Model 3, AB-12-CD",
                    },
                },
            ]
        }
    )

    path: str
    value: JSON
