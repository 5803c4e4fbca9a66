"""The trips' OpenAPI contract: each pattern the schema publishes accepts exactly what the
server's check accepts, and the fuzzer's findings stay fixed (against the real cluster)."""

from __future__ import annotations

import random
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.cluster import RedisCluster

from app.main import create_app
from app.records.ids import CROCKFORD, ULID_PATTERN, new_ulid
from app.trips.schemas import (
    DOC_PATH_PATTERN,
    MANAGED,
    MANAGED_PATH_PATTERN,
    MAX_GEO_LATITUDE,
    MAX_NEAR_LENGTH,
    MAX_PATH_LENGTH,
    NEAR_PATTERN,
    DocPath,
    DocUpdate,
    TripId,
    check_near,
    near_point,
)
from tests.conftest import data_keys
from tests.trips.test_trips import AIRPORT, LISBON, assign, new_driver, new_trip

ROUNDS = 20_000
OPERATIONS = ("get", "post", "put", "patch", "delete")


def accepts(adapter: TypeAdapter[str], text: str) -> bool:
    try:
        adapter.validate_python(text)
    except ValidationError:
        return False
    return True


# Texts without a line feed: there Python's ``$`` reads as JSON Schema's (the end of the text).
def published(pattern: str, text: str) -> bool:
    assert "\n" not in text
    return re.search(pattern, text) is not None


def test_the_id_pattern_is_the_id_check() -> None:
    adapter = TypeAdapter(TripId)
    rng = random.Random(1)
    alphabet = CROCKFORD + "ILOUilou0189az-_ é"
    for _ in range(ROUNDS):
        length = rng.choice([0, 1, 25, 26, 26, 26, 27])
        first = rng.choice(["", rng.choice("01234567"), rng.choice("89XZ")])
        text = (first + "".join(rng.choice(alphabet) for _ in range(length)))[:length]
        assert published(ULID_PATTERN, text) == accepts(adapter, text), text
    assert accepts(adapter, new_ulid(slot=16383))
    assert accepts(adapter, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), "the largest ULID"


def _decimal(rng: random.Random) -> str:
    sign = rng.choice(["", "", "-", "+"])
    whole = rng.choice(["0", "9", "10", "84", "85", "86", "90", "179", "180", "181", "05", "1000"])
    if rng.random() < 0.3:
        whole = str(rng.randrange(0, 200))
    fraction = ""
    if rng.random() < 0.7:
        prefix = "05112878"[: rng.randrange(0, 9)] if whole in ("85", "180") else ""
        tail = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 4)))
        fraction = "." + (prefix + tail or rng.choice(["", "0"]))
    return sign + whole + fraction


def _in_range(text: str) -> bool:
    """Whether ``text`` is lat,lon in the published grammar and ranges (read exactly)."""
    number = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
    parts = text.split(",")
    if len(parts) != 2 or not all(re.fullmatch(number, part) for part in parts):
        return False
    lat, lon = (abs(Decimal(part)) for part in parts)
    return lat <= Decimal(str(MAX_GEO_LATITUDE)) and lon <= 180 and len(text) <= MAX_NEAR_LENGTH


def test_the_near_pattern_is_the_near_check_and_its_ranges() -> None:
    rng = random.Random(2)
    for _ in range(ROUNDS):
        text = f"{_decimal(rng)},{_decimal(rng)}"
        if rng.random() < 0.05:
            text = rng.choice([text + ",1", " " + text, text.replace(",", ";"), "1e1,0"])
        try:
            check_near(text)
            checked = True
        except ValueError:
            checked = False
        assert checked == (published(NEAR_PATTERN, text) and len(text) <= MAX_NEAR_LENGTH), text
        assert checked == _in_range(text), text
        if checked:
            near_point(text)  # in the geo index's ranges as a float too
    assert published(NEAR_PATTERN, "85.05112878,-180")
    assert not published(NEAR_PATTERN, "85.051128781,0")


SEGMENTS = [
    ".notes",
    ".a_1",
    "._x",
    ".1a",
    ".",
    ".é",
    "[0]",
    "[123456789]",
    "[1234567890]",
    "[]",
    "[-1]",
    "[\u0663]",
    "[*]",
    "..a",
    '["a b"]',
    '[""]',
    '["a\\"b"]',
    '["a\\\\"]',
    '["a\\\\b"]',
    '["\\\\\\""]',
    '["a\\n"]',
    '["\t"]',
    '["\x01"]',
    '["\\\t"]',
    '["😀"]',
    '["a"b"]',
    '["a',
    '["status"]',
    '["status "]',
    ".status",
    ".status_x",
    ".driver",
    ".distance_km",
    ".pickup",
]


def _path(rng: random.Random) -> str:
    start = rng.choice(["$", "$", "$", "", "x", "$$"])
    parts = [rng.choice(SEGMENTS) for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 32, 33]))]
    return start + "".join(parts)


def test_the_document_path_pattern_is_the_path_check() -> None:
    rng = random.Random(3)
    adapter = TypeAdapter(DocPath)
    for _ in range(ROUNDS):
        text = _path(rng)
        schema_valid = published(DOC_PATH_PATTERN, text) and len(text) <= MAX_PATH_LENGTH
        assert schema_valid == accepts(adapter, text), repr(text)
    assert not accepts(adapter, "$." + "a" * MAX_PATH_LENGTH)


def test_a_writable_path_is_one_the_managed_pattern_does_not_match() -> None:
    rng = random.Random(4)
    readable = TypeAdapter(DocPath)
    for _ in range(ROUNDS):
        text = _path(rng)
        if not accepts(readable, text):
            continue
        try:
            DocUpdate(path=text, value=1)
            writable = True
        except ValidationError:
            writable = False
        assert writable == (not published(MANAGED_PATH_PATTERN, text)), repr(text)
    for name in MANAGED:
        assert published(MANAGED_PATH_PATTERN, f"$.{name}")
        assert published(MANAGED_PATH_PATTERN, f'$["{name}"].x')


def test_every_operation_is_documented_and_linked() -> None:
    schema = create_app().openapi()
    operation_ids = {
        operation["operationId"]
        for item in schema["paths"].values()
        for method, operation in item.items()
        if method in OPERATIONS
    }
    ours = [
        operation
        for path, item in schema["paths"].items()
        if path.startswith(("/trips", "/drivers"))
        for method, operation in item.items()
        if method in OPERATIONS
    ]
    assert len(ours) == 9
    links = 0
    for operation in ours:
        assert operation["summary"], operation["operationId"]
        assert operation["description"], operation["operationId"]
        for answer in operation["responses"].values():
            for link in answer.get("links", {}).values():
                assert link["operationId"] in operation_ids, link
                links += 1
    assert links >= 8
    components = schema["components"]["schemas"]
    for name in ("TripCreate", "Trip", "PendingTrips", "DriverCreate", "DriverPublic"):
        assert components[name]["examples"], name
    for name in ("TripMove", "TripAssign", "DocUpdate", "DocValue"):
        assert components[name]["examples"], name


# Against the cluster: the fuzzer's findings.


@pytest.mark.parametrize(
    "body",
    [
        {"requester": "ana", "pickup": LISBON, "dropoff": {"lat": 38.77, "lon": False}},
        {"requester": "ana", "pickup": {"lat": True, "lon": -9.14}, "dropoff": AIRPORT},
        {"requester": "ana", "pickup": LISBON, "dropoff": {"lat": "38.77", "lon": -9.13}},
        {"requester": 7, "pickup": LISBON, "dropoff": AIRPORT},
    ],
)
async def test_a_boolean_or_a_string_for_a_number_is_422_and_writes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, body: dict[str, Any]
) -> None:
    answer = await client.post("/trips", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"]
    driver = {"name": "Rui", "car": "a car", "location": {"lat": 38.7, "lon": False}}
    assert (await client.post("/drivers", json=driver)).status_code == 422
    assert {k for k in await data_keys(redis) if "trip" in k or "driver" in k} == set()


async def test_whole_numbers_are_numbers(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client, {"lat": 38, "lon": -9})
    assert (trip["pickup"], trip["region"]) == ({"lat": 38.0, "lon": -9.0}, "38:-9")
    driver = await new_driver(client, location={"lat": 38, "lon": -9})
    assert driver["location"] == {"lat": 38.0, "lon": -9.0}


async def test_ids_the_pattern_accepts_reach_every_operation(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    for ghost in ("7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "00000000000000000000000000"):
        assert (await client.get(f"/trips/{ghost}")).status_code == 404
        assert (await client.get(f"/drivers/{ghost}")).status_code == 404
        doc = await client.get(f"/trips/{ghost}/doc", params={"path": "$.notes"})
        assert doc.status_code == 404
        edit = await client.patch(f"/trips/{ghost}/doc", json={"path": "$.notes", "value": 1})
        assert edit.status_code == 404
        assert (
            await client.patch(f"/trips/{ghost}", json={"status": "cancelled"})
        ).status_code == 404
        assert (await assign(client, ghost, ghost)).status_code == 404
        unknown_driver = await assign(client, trip["id"], ghost)
        assert unknown_driver.status_code == 409, "the trip is there: the driver named is not"
        assert f"Driver not found: {ghost}" in unknown_driver.json()["message"]


@pytest.mark.parametrize(
    ("trip_id", "words"),
    [
        ("nope", "must be 26 characters, got 4"),
        ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "larger than 128 bits"),
        ("01m84cezwms4htm0m9w38zz28p", "Crockford base-32"),
        ("01I84CEZWMS4HTM0M9W38ZZ28P", "Crockford base-32"),
    ],
)
async def test_ids_the_pattern_refuses_are_422_naming_why(
    client: httpx.AsyncClient, trip_id: str, words: str
) -> None:
    answer = await client.get(f"/trips/{trip_id}")
    assert answer.status_code == 422
    assert "a message id is a ULID" in answer.json()["message"]
    assert words in answer.json()["message"]


async def test_a_method_the_listing_lacks_is_405(client: httpx.AsyncClient) -> None:
    answer = await client.patch("/trips/pending", json={"status": "cancelled"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert (await client.get("/trips/pending/doc", params={"path": "$.a"})).status_code == 422


async def test_a_radius_without_near_lists_oldest_first(client: httpx.AsyncClient) -> None:
    first = await new_trip(client)
    second = await new_trip(client, {"lat": 41.15, "lon": -8.61})
    answer = await client.get("/trips/pending", params={"radius_km": 5})
    assert answer.status_code == 200
    listed = answer.json()["trips"]
    assert [t["id"] for t in listed] == [first["id"], second["id"]]
    assert all("distance_km" not in t for t in listed)


async def test_a_search_over_too_many_regions_asks_every_region(
    client: httpx.AsyncClient,
) -> None:
    # 85,0 with 500 km touches thousands of one-degree cells: it was refused with 422.
    far_east = await new_trip(client, {"lat": 84, "lon": 40})
    await new_trip(client, LISBON)
    answer = await client.get("/trips/pending", params={"near": "85,0", "radius_km": 500})
    assert answer.status_code == 200, answer.text
    assert [t["id"] for t in answer.json()["trips"]] == [far_east["id"]]
    assert 400 < answer.json()["trips"][0]["distance_km"] < 500


async def test_answers_carry_only_the_members_they_have(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    assert not {"assigned_at", "cancelled_at", "distance_km"} & set(trip)
    assert trip["driver"] is None
    driver = await new_driver(client)
    assert driver["trip"] is None
    near = await client.get("/trips/pending", params={"near": "38.72,-9.14"})
    assert near.json()["trips"][0]["distance_km"] == 0.0
    assigned = (await assign(client, trip["id"], driver["id"])).json()
    assert assigned["assigned_at"].endswith("Z")
    assert "in_progress_at" not in assigned


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ('$["a\\"b"]', 200),
        ('$["a\\\\b"]', 200),
        ('$["😀"]', 200),
        ("$.status_note", 200),
        ('$["status "]', 200),
        ('$["a\\\\"]', 422),
        ('$["status"]', 422),
        ("$.status.x", 422),
        ("$.distance_km", 422),
        ("$.a[\u0663]", 422),
        ("$.notes\n", 422),
    ],
)
async def test_document_paths_at_the_edges_of_the_pattern(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    trip = await new_trip(client)
    before = (await client.get(f"/trips/{trip['id']}")).json()
    answer = await client.patch(f"/trips/{trip['id']}/doc", json={"path": path, "value": 1})
    assert answer.status_code == status, answer.text
    if status == 200:
        read = await client.get(f"/trips/{trip['id']}/doc", params={"path": path})
        assert read.json() == {"path": path, "value": 1}
    else:
        assert "path" in answer.json()["message"]
        assert (await client.get(f"/trips/{trip['id']}")).json() == before
