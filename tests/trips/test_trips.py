"""Trip Management and Driver Management sharing state, against the real cluster."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.trips import keys
from tests.conftest import data_keys, shard_of
from tests.engines import chosen_engine

LISBON = {"lat": 38.72, "lon": -9.14}
AIRPORT = {"lat": 38.77, "lon": -9.13}
PORTO = {"lat": 41.15, "lon": -8.61}
DEEP: list[Any] = []
for _ in range(70):
    DEEP = [DEEP]
STATUSES = ["requested", "assigned", "in_progress", "completed", "cancelled"]
# The session cluster's nodes have the JSON module (TEST_REDIS_ENGINE=redis-json, valkey-json).
NATIVE_JSON = chosen_engine().has_json
ALLOWED = {
    ("requested", "cancelled"),
    ("assigned", "in_progress"),
    ("assigned", "cancelled"),
    ("in_progress", "completed"),
    ("in_progress", "cancelled"),
}


async def new_trip(
    client: httpx.AsyncClient, pickup: dict[str, float] = LISBON, requester: str = "ana"
) -> dict[str, Any]:
    answer = await client.post(
        "/trips", json={"requester": requester, "pickup": pickup, "dropoff": AIRPORT}
    )
    assert answer.status_code == 201, answer.text
    trip: dict[str, Any] = answer.json()
    return trip


async def new_driver(
    client: httpx.AsyncClient, name: str = "Rui", location: dict[str, float] = LISBON
) -> dict[str, Any]:
    answer = await client.post(
        "/drivers", json={"name": name, "car": f"car of {name}", "location": location}
    )
    assert answer.status_code == 201, answer.text
    driver: dict[str, Any] = answer.json()
    return driver


async def assign(client: httpx.AsyncClient, trip_id: str, driver_id: str) -> httpx.Response:
    return await client.post(f"/trips/{trip_id}/assign", json={"driver_id": driver_id})


async def move(client: httpx.AsyncClient, trip_id: str, status: str) -> httpx.Response:
    return await client.patch(f"/trips/{trip_id}", json={"status": status})


async def trip_in(client: httpx.AsyncClient, status: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a trip brought to ``status`` (with a driver from "assigned" on) and its driver."""
    trip = await new_trip(client)
    driver = await new_driver(client)
    path = {
        "requested": [],
        "assigned": ["assign"],
        "in_progress": ["assign", "in_progress"],
        "completed": ["assign", "in_progress", "completed"],
        "cancelled": ["cancelled"],
    }[status]
    for step in path:
        answer = (
            await assign(client, trip["id"], driver["id"])
            if step == "assign"
            else await move(client, trip["id"], step)
        )
        assert answer.status_code == 200, answer.text
    return trip, driver


async def test_a_trips_whole_life(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    trip = await new_trip(client)
    assert trip["status"] == "requested"
    assert trip["driver"] is None
    assert trip["created_at"].endswith("Z")
    assert (await client.get(f"/trips/{trip['id']}")).json() == trip
    stored = await redis.hgetall(keys.trip_key(trip["id"]))
    assert stored == {
        "created_at": trip["created_at"],
        "requester": "ana",
        "location": "38.72,-9.14",
        "status": "requested",
        "region": "38:-10",
    }, "the seed's hash per trip, and its region"
    driver = await new_driver(client)
    assert driver["status"] == "available"
    assert [t["id"] for t in (await client.get("/trips/pending")).json()["trips"]] == [trip["id"]]

    assigned = await assign(client, trip["id"], driver["id"])
    assert assigned.status_code == 200
    assert assigned.json()["driver"] == {"id": driver["id"], "name": "Rui", "car": "car of Rui"}
    assert assigned.json()["status"] == "assigned"
    stored = await redis.hgetall(keys.trip_key(trip["id"]))
    assert (stored["status"], stored["driver"], stored["car"]) == (
        "assigned",
        driver["id"],
        "car of Rui",
    )
    assert (await client.get("/trips/pending")).json()["trips"] == []
    busy = (await client.get(f"/drivers/{driver['id']}")).json()
    assert (busy["status"], busy["trip"]) == ("busy", trip["id"])

    assert (await move(client, trip["id"], "in_progress")).status_code == 200
    done = await move(client, trip["id"], "completed")
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert {"assigned_at", "in_progress_at", "completed_at"} <= set(done.json())
    free = (await client.get(f"/drivers/{driver['id']}")).json()
    assert (free["status"], free["trip"]) == ("available", None)


async def test_cancelling_frees_the_driver_and_the_pending_set(client: httpx.AsyncClient) -> None:
    waiting = await new_trip(client)
    assert (await move(client, waiting["id"], "cancelled")).status_code == 200
    assert (await client.get("/trips/pending")).json()["trips"] == []
    near = await client.get("/trips/pending", params={"near": "38.72,-9.14", "radius_km": 5})
    assert near.json()["trips"] == []
    trip, driver = await trip_in(client, "in_progress")
    assert (await move(client, trip["id"], "cancelled")).status_code == 200
    assert (await client.get(f"/drivers/{driver['id']}")).json()["status"] == "available"


async def test_many_drivers_one_trip_exactly_one_wins(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    drivers = [await new_driver(client, f"driver-{n}") for n in range(12)]
    answers = await asyncio.gather(*(assign(client, trip["id"], d["id"]) for d in drivers))
    assert Counter(a.status_code for a in answers) == {200: 1, 409: 11}
    (winner,) = [d for d, a in zip(drivers, answers, strict=True) if a.status_code == 200]
    assert (await client.get(f"/trips/{trip['id']}")).json()["driver"]["id"] == winner["id"]
    statuses = [
        (await client.get(f"/drivers/{d['id']}")).json()["status"] for d in drivers if d != winner
    ]
    assert set(statuses) == {"available"}
    loser = next(a for a in answers if a.status_code == 409)
    assert "only a requested trip can be assigned" in loser.json()["message"]


async def test_one_driver_many_trips_exactly_one_wins(client: httpx.AsyncClient) -> None:
    trips = [await new_trip(client, requester=f"rider-{n}") for n in range(12)]
    driver = await new_driver(client)
    answers = await asyncio.gather(*(assign(client, t["id"], driver["id"]) for t in trips))
    assert Counter(a.status_code for a in answers) == {200: 1, 409: 11}
    (won,) = [t for t, a in zip(trips, answers, strict=True) if a.status_code == 200]
    assert (await client.get(f"/drivers/{driver['id']}")).json()["trip"] == won["id"]
    pending = {t["id"] for t in (await client.get("/trips/pending")).json()["trips"]}
    assert pending == {t["id"] for t in trips} - {won["id"]}
    busy = next(a for a in answers if a.status_code == 409)
    assert f"Driver {driver['id']} is busy with trip {won['id']}" in busy.json()["message"]


@pytest.mark.parametrize(
    ("start", "target"),
    [(s, t) for s in STATUSES for t in STATUSES if s != t and (s, t) not in ALLOWED],
)
async def test_every_invalid_move_is_409_and_changes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, start: str, target: str
) -> None:
    trip, driver = await trip_in(client, start)
    before_trip = await redis.hgetall(keys.trip_key(trip["id"]))
    before_doc = (await client.get(f"/trips/{trip['id']}")).json()
    before_driver = (await client.get(f"/drivers/{driver['id']}")).json()
    answer = await move(client, trip["id"], target)
    assert answer.status_code == 409
    assert f"cannot move from {start} to {target}" in answer.json()["message"]
    assert await redis.hgetall(keys.trip_key(trip["id"])) == before_trip
    assert (await client.get(f"/trips/{trip['id']}")).json() == before_doc
    assert (await client.get(f"/drivers/{driver['id']}")).json() == before_driver


@pytest.mark.parametrize("status", STATUSES)
async def test_a_move_to_the_current_status_changes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, status: str
) -> None:
    trip, driver = await trip_in(client, status)
    before = (await client.get(f"/trips/{trip['id']}")).json()
    before_driver = (await client.get(f"/drivers/{driver['id']}")).json()
    answer = await move(client, trip["id"], status)
    assert answer.status_code == 200, "a repeated request (or a re-send) is safe"
    assert answer.json() == before
    assert (await client.get(f"/drivers/{driver['id']}")).json() == before_driver


async def test_only_a_requested_trip_can_be_assigned(client: httpx.AsyncClient) -> None:
    for status in ("assigned", "in_progress", "completed", "cancelled"):
        trip, driver = await trip_in(client, status)
        other = await new_driver(client, "Eva")
        answer = await assign(client, trip["id"], other["id"])
        assert answer.status_code == 409
        assert (await client.get(f"/drivers/{other['id']}")).json()["status"] == "available"
        if status != "assigned":
            again = await assign(client, trip["id"], driver["id"])
            assert again.status_code == 409, "its own driver cannot take it again either"


async def test_regions_that_share_a_slot_are_still_separate(client: httpx.AsyncClient) -> None:
    assert keys.region_slot("38:-10") == keys.region_slot("-30:99")
    trip = await new_trip(client, {"lat": -29.5, "lon": 99.5})
    driver = await new_driver(client)
    answer = await assign(client, trip["id"], driver["id"])
    assert answer.status_code == 409
    assert "region 38:-10" in answer.json()["message"]
    assert (await client.get(f"/drivers/{driver['id']}")).json()["status"] == "available"


async def test_a_driver_takes_trips_of_their_own_region(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client, PORTO)
    driver = await new_driver(client)
    answer = await assign(client, trip["id"], driver["id"])
    assert answer.status_code == 409
    assert "region 38:-10" in answer.json()["message"]
    assert (await client.get(f"/trips/{trip['id']}")).json()["status"] == "requested"


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    driver = await new_driver(client)
    ghost = "01M84C9X16ZG0N8T9B13XKXJ8P"
    assert (await client.get(f"/trips/{ghost}")).status_code == 404
    assert (await client.get(f"/drivers/{ghost}")).status_code == 404
    assert (await client.get("/trips/nope")).status_code == 422
    assert (await assign(client, ghost, driver["id"])).status_code == 404
    unknown_driver = await assign(client, trip["id"], trip["id"])
    assert unknown_driver.status_code == 409, "the trip is there: the driver named is not"
    assert "Driver not found" in unknown_driver.json()["message"]
    assert (await move(client, ghost, "cancelled")).status_code == 404


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"pickup": LISBON, "dropoff": AIRPORT}, "requester"),
        ({"requester": "a", "pickup": {"lat": 91, "lon": 0}, "dropoff": AIRPORT}, "pickup.lat"),
        ({"requester": "a", "pickup": {"lat": 86, "lon": 10}, "dropoff": AIRPORT}, "pickup.lat"),
        ({"requester": "a", "pickup": LISBON, "dropoff": {"lat": 0, "lon": 181}}, "dropoff.lon"),
        ({"requester": "", "pickup": LISBON, "dropoff": AIRPORT}, "requester"),
    ],
)
async def test_bad_trips_are_422_and_write_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, body: dict[str, Any], named: str
) -> None:
    answer = await client.post("/trips", json=body)
    assert answer.status_code == 422
    assert named in answer.json()["message"]
    assert {k for k in await data_keys(redis) if "trip" in k} == set()


async def test_bad_status_is_422(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    answer = await move(client, trip["id"], "teleported")
    assert answer.status_code == 422
    assert "status" in answer.json()["message"]


async def test_pending_oldest_first_across_regions(client: httpx.AsyncClient) -> None:
    places = [LISBON, PORTO, {"lat": 40.41, "lon": -3.70}, AIRPORT, {"lat": 48.85, "lon": 2.35}]
    trips = [await new_trip(client, place, f"rider-{n}") for n, place in enumerate(places)]
    listed = (await client.get("/trips/pending")).json()["trips"]
    assert [t["id"] for t in listed] == [t["id"] for t in trips]
    two = (await client.get("/trips/pending", params={"limit": 2})).json()["trips"]
    assert [t["id"] for t in two] == [t["id"] for t in trips[:2]]


async def test_pending_near_a_point_nearest_first_across_a_region_border(
    client: httpx.AsyncClient,
) -> None:
    # 38.999 and 39.001 are in different regions (1-degree cells), 220 m apart.
    south = await new_trip(client, {"lat": 38.999, "lon": -9.1})
    north = await new_trip(client, {"lat": 39.001, "lon": -9.1})
    far = await new_trip(client, {"lat": 38.9, "lon": -9.1})
    await new_trip(client, PORTO)
    found = (
        await client.get("/trips/pending", params={"near": "38.9995,-9.1", "radius_km": 5})
    ).json()["trips"]
    assert [t["id"] for t in found] == [south["id"], north["id"]]
    assert found[0]["distance_km"] < found[1]["distance_km"] < 1
    wider = (
        await client.get("/trips/pending", params={"near": "38.9995,-9.1", "radius_km": 20})
    ).json()["trips"]
    assert [t["id"] for t in wider] == [south["id"], north["id"], far["id"]]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"near": "38.7"}, "near"),
        ({"near": "86,10"}, "near"),
        ({"near": "north,west"}, "near"),
        ({"near": "85.06,0"}, "near"),
        ({"near": "38.7,180.5"}, "near"),
        ({"near": "3.87e1,-9.1"}, "near"),
        ({"near": " 38.7,-9.1"}, "near"),
        ({"radius_km": "wide"}, "radius_km"),
        ({"near": "38.7,-9.1", "radius_km": 0}, "radius_km"),
        ({"near": "38.7,-9.1", "radius_km": 501}, "radius_km"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_bad_pending_queries_are_422(
    client: httpx.AsyncClient, params: dict[str, Any], named: str
) -> None:
    answer = await client.get("/trips/pending", params=params)
    assert answer.status_code == 422
    assert named in answer.json()["message"]


async def test_searches_cover_the_whole_radius_and_wrap_at_180_degrees(
    client: httpx.AsyncClient,
) -> None:
    edge = await new_trip(client, {"lat": 37.9995, "lon": -9.1})
    found = await client.get("/trips/pending", params={"near": "38.8984,-9.1", "radius_km": 100})
    assert [t["id"] for t in found.json()["trips"]] == [edge["id"]], "99.98 km away, in range"
    east = await new_trip(client, {"lat": 10, "lon": 180})
    west = await new_trip(client, {"lat": 10, "lon": -179.99})
    across = await client.get("/trips/pending", params={"near": "10,179.995", "radius_km": 5})
    assert {t["id"] for t in across.json()["trips"]} == {east["id"], west["id"]}
    assert east["region"] == "10:-180", "longitude 180 is -180"


async def test_document_paths_read_and_write(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    url = f"/trips/{trip['id']}/doc"
    written = await client.patch(
        url, json={"path": "$.notes", "value": {"bags": 2, "stops": [], "fare": 12.50}}
    )
    assert written.status_code == 200
    await client.patch(url, json={"path": "$.notes.stops", "value": [{"at": "gate 4"}]})
    await client.patch(url, json={"path": '$.notes["child seat"]', "value": True})
    await client.patch(url, json={"path": "$.notes.stops[0].at", "value": "gate 5"})
    got = await client.get(url, params={"path": "$.notes"})
    assert got.json() == {
        "path": "$.notes",
        "value": {"bags": 2, "stops": [{"at": "gate 5"}], "fare": 12.5, "child seat": True},
    }
    whole = (await client.get(f"/trips/{trip['id']}")).json()
    assert whole["notes"]["stops"] == [{"at": "gate 5"}]
    assert (await client.get(url, params={"path": "$.status"})).json()["value"] == "requested"


async def test_document_edits_keep_the_rest_exactly(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    url = f"/trips/{trip['id']}/doc"
    value = {"empty": [], "big": 12345678901234567, "precise": 0.1 + 0.2, "text": 'é\n"q"'}
    await client.patch(url, json={"path": "$.extra", "value": value})
    await client.patch(url, json={"path": "$.other", "value": 1})
    assert (await client.get(url, params={"path": "$.extra"})).json()["value"] == value


@pytest.mark.parametrize(
    ("update", "status", "words"),
    [
        ({"path": "$.status", "value": "completed"}, 422, "manages"),
        ({"path": "$.driver", "value": None}, 422, "manages"),
        ({"path": "$", "value": {}}, 422, "whole document"),
        ({"path": "notes", "value": 1}, 422, "starts with $"),
        ({"path": "$.a[*]", "value": 1}, 422, "cannot read the path"),
        ({"path": "$.missing.child", "value": 1}, 409, "No value at $.missing.child"),
        ({"path": "$.deep", "value": DEEP}, 422, "nest"),
        ({"path": '$["tab\there"]', "value": 1}, 422, "control characters"),
        ({"path": "$.a[1234567890]", "value": 1}, 422, "cannot read the path"),
    ],
)
async def test_bad_document_edits_change_nothing(
    client: httpx.AsyncClient, update: dict[str, Any], status: int, words: str
) -> None:
    trip = await new_trip(client)
    before = (await client.get(f"/trips/{trip['id']}")).json()
    answer = await client.patch(f"/trips/{trip['id']}/doc", json=update)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]
    assert (await client.get(f"/trips/{trip['id']}")).json() == before


async def test_a_nan_value_is_422(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    answer = await client.patch(
        f"/trips/{trip['id']}/doc",
        content=b'{"path": "$.note", "value": NaN}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert "finite" in answer.json()["message"]


async def test_documents_are_json_keys_where_the_server_has_json(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    """The trips' own user finds the JSON commands where the nodes have them, and the script
    stores the document as the server's JSON type; elsewhere as text."""
    trip = await new_trip(client)
    stored = await redis.type(keys.trip_doc_key(trip["id"]))
    assert stored == ("ReJSON-RL" if NATIVE_JSON else "string")


@pytest.mark.skipif(
    NATIVE_JSON, reason="the limit bounds the text the script rewrites; JSON.SET has the server's"
)
async def test_a_document_has_a_size_limit(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    url = f"/trips/{trip['id']}/doc"
    chunk = "x" * 60_000
    statuses = [
        (await client.patch(url, json={"path": f"$.part{n}", "value": chunk})).status_code
        for n in range(20)
    ]
    assert statuses[:17] == [200] * 17
    assert statuses[-1] == 422
    refused = await client.patch(url, json={"path": "$.more", "value": chunk})
    assert "exceed" in refused.json()["message"]
    assert "more" not in (await client.get(f"/trips/{trip['id']}")).json()


async def test_concurrent_path_updates_lose_nothing(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    driver = await new_driver(client)
    url = f"/trips/{trip['id']}/doc"
    await client.patch(url, json={"path": "$.notes", "value": {}})
    edits = [client.patch(url, json={"path": f"$.notes.k{n}", "value": n}) for n in range(60)]
    answers = await asyncio.gather(assign(client, trip["id"], driver["id"]), *edits)
    assert {a.status_code for a in answers} == {200}
    whole = (await client.get(f"/trips/{trip['id']}")).json()
    assert whole["notes"] == {f"k{n}": n for n in range(60)}
    assert whole["status"] == "assigned"
    assert whole["driver"]["id"] == driver["id"]


async def test_missing_path_reads_are_404(client: httpx.AsyncClient) -> None:
    trip = await new_trip(client)
    answer = await client.get(f"/trips/{trip['id']}/doc", params={"path": "$.nothing"})
    assert answer.status_code == 404
    bad = await client.get(f"/trips/{trip['id']}/doc", params={"path": "$..x"})
    assert bad.status_code == 422


async def test_regions_spread_over_the_shards(redis: RedisCluster) -> None:
    regions = [
        keys.region_of(lat, lon, 1.0) for lat in range(30, 50, 3) for lon in range(-10, 10, 3)
    ]
    shards = {shard_of(redis, keys.pending_key(keys.region_slot(r))) for r in regions}
    assert len(shards) == 3
