"""The customer service: the launch post's session, types, versions, listing and bad input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.customers import keys
from app.records import index
from tests.conftest import data_keys, shard_of

DANILO = {
    "name": "Danilo",
    "address": "Somewhere in London",
    "phone": "+1-555-2106",
    "email": "danilo@example.com",
    "balance": 1000,
}
JSON = {"Content-Type": "application/json"}


async def create(client: httpx.AsyncClient, fields: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/customers", json=fields)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def list_all(client: httpx.AsyncClient, limit: int = 100) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/customers", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["customers"]) <= limit
        found += body["customers"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_launch_post_session(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    created = [await create(client, DANILO) for _ in range(3)]
    for customer in created:
        assert customer == {**DANILO, "id": customer["id"]}
        assert uuid.UUID(customer["id"]).version == 4
        # Stored as the launch post stores it: the hash customer:<id> of plain values.
        stored = await redis.hgetall(f"customer:{customer['id']}")
        assert stored == {**DANILO, "balance": "1000"}

    listed = await list_all(client)
    assert sorted(listed, key=lambda c: c["id"]) == sorted(created, key=lambda c: c["id"])

    target = created[2]["id"]
    updated = await client.put(f"/customers/{target}", json={"balance": 0})
    assert updated.status_code == 204
    assert updated.content == b""

    read = await client.get(f"/customers/{target}")
    assert read.status_code == 200
    assert read.json() == {**DANILO, "balance": 0, "id": target}
    assert isinstance(read.json()["balance"], int)
    for other in created[:2]:
        assert (await client.get(f"/customers/{other['id']}")).json()["balance"] == 1000


ROUND_TRIPS = [
    pytest.param("text", "text", id="string"),
    pytest.param("", "", id="empty-string"),
    pytest.param("1000", "1000", id="numeric-string"),
    pytest.param("true", "true", id="boolean-string"),
    pytest.param("José 🚀", "José 🚀", id="unicode"),
    pytest.param(1000, "1000", id="integer"),
    pytest.param(-7, "-7", id="negative"),
    pytest.param(0, "0", id="zero"),
    pytest.param(2**70, str(2**70), id="big-integer"),
    pytest.param(10.5, "10.5", id="float"),
    pytest.param(1.0, "1.0", id="whole-float"),
    pytest.param(0.1, "0.1", id="decimal-float"),
    pytest.param(1e30, "1e+30", id="exponent"),
    pytest.param(True, "true", id="true"),
    pytest.param(False, "false", id="false"),
    pytest.param(None, "", id="null"),
]


@pytest.mark.parametrize(("value", "stored"), ROUND_TRIPS)
async def test_values_keep_their_json_type(
    client: httpx.AsyncClient, redis: RedisCluster, value: Any, stored: str
) -> None:
    created = await create(client, {"v": value, "name": "x"})
    assert created["v"] == value
    assert type(created["v"]) is type(value)
    read = (await client.get(f"/customers/{created['id']}")).json()
    assert read["v"] == value
    assert type(read["v"]) is type(value)
    assert await redis.hget(keys.customer_key(created["id"]), "v") == stored
    listed = await list_all(client)
    assert listed[0]["v"] == value
    assert type(listed[0]["v"]) is type(value)


async def test_an_update_can_change_a_fields_type(client: httpx.AsyncClient) -> None:
    customer = await create(client, {"balance": 1000, "vip": "no"})
    await client.put(f"/customers/{customer['id']}", json={"balance": "unknown", "vip": True})
    read = (await client.get(f"/customers/{customer['id']}")).json()
    assert read == {"balance": "unknown", "vip": True, "id": customer["id"]}


async def test_missing_customers_are_404_and_nothing_is_created(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    missing = str(uuid.uuid4())
    message = {"message": f"Customer not found: {missing}"}
    for answer in (
        await client.get(f"/customers/{missing}"),
        await client.put(f"/customers/{missing}", json={"balance": 0}),
        await client.delete(f"/customers/{missing}"),
    ):
        assert answer.status_code == 404
        assert answer.json() == message
    assert await data_keys(redis) == set()


async def test_delete(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    customer = await create(client, DANILO)
    other = await create(client, DANILO)
    deleted = await client.delete(f"/customers/{customer['id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/customers/{customer['id']}")).status_code == 404
    assert (await client.delete(f"/customers/{customer['id']}")).status_code == 404
    assert [c["id"] for c in await list_all(client)] == [other["id"]]
    assert await redis.exists(keys.customer_key(customer["id"]), keys.meta_key(customer["id"])) == 0


async def test_a_repeated_delete_with_its_idempotency_key_succeeds(
    client: httpx.AsyncClient,
) -> None:
    customer = await create(client, DANILO)
    headers = {"Idempotency-Key": "delete-7"}
    for _ in range(2):
        answer = await client.delete(f"/customers/{customer['id']}", headers=headers)
        assert answer.status_code == 204


async def test_a_create_retried_with_its_idempotency_key_is_stored_once(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "create-42"}
    first = await client.post("/customers", json=DANILO, headers=headers)
    again = await client.post("/customers", json=DANILO, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert [c["id"] for c in await list_all(client)] == [first.json()["id"]]
    other = await client.post("/customers", json=DANILO, headers={"Idempotency-Key": "other"})
    assert other.json()["id"] != first.json()["id"]


async def test_a_reused_idempotency_key_never_creates_or_returns_something_else(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "create-43"}
    first = await client.post("/customers", json={"n": 1}, headers=headers)
    other_body = await client.post("/customers", json={"n": 2}, headers=headers)
    assert other_body.status_code == 409
    assert "used for another request" in other_body.json()["message"]
    assert (await client.delete(f"/customers/{first.json()['id']}")).status_code == 204
    after_delete = await client.post("/customers", json={"n": 1}, headers=headers)
    assert after_delete.status_code == 409
    assert "has been deleted since" in after_delete.json()["message"]
    assert await list_all(client) == []


async def test_an_update_sent_again_after_a_later_update_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    customer = await create(client, DANILO)
    url = f"/customers/{customer['id']}"
    first = await client.put(url, json={"balance": 1}, headers={"Idempotency-Key": "k1"})
    assert first.headers["ETag"] == '"2"'
    await client.put(url, json={"balance": 2}, headers={"Idempotency-Key": "k2"})
    again = await client.put(
        url, json={"balance": 1}, headers={"Idempotency-Key": "k1", "If-Match": '"2"'}
    )
    # Answered as the first time (204, its version), and the later write stands.
    assert again.status_code == 204
    assert again.headers["ETag"] == '"2"'
    read = await client.get(url)
    assert read.json()["balance"] == 2
    assert read.headers["ETag"] == '"3"'


async def test_a_customer_written_by_the_launch_post_code_reads_as_it_was_stored(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    customer_id = str(uuid.uuid4())
    # What the post's code does: HSET customer:<id> with the request's fields.
    await redis.hset(f"customer:{customer_id}", mapping={"name": "Ana", "balance": 1000})
    read = await client.get(f"/customers/{customer_id}")
    assert read.json() == {"name": "Ana", "balance": "1000", "id": customer_id}
    assert read.headers["ETag"] == '"0"'
    updated = await client.put(
        f"/customers/{customer_id}", json={"balance": 5}, headers={"If-Match": '"0"'}
    )
    assert updated.status_code == 204
    assert (await client.get(f"/customers/{customer_id}")).json()["balance"] == 5


# Versions and ETags ------------------------------------------------------------------------


async def test_etags_follow_versions(client: httpx.AsyncClient) -> None:
    created = await client.post("/customers", json=DANILO)
    customer_id = created.json()["id"]
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"/customers/{customer_id}"
    assert (await client.get(f"/customers/{customer_id}")).headers["ETag"] == '"1"'

    updated = await client.put(
        f"/customers/{customer_id}", json={"balance": 1}, headers={"If-Match": '"1"'}
    )
    assert updated.status_code == 204
    assert updated.headers["ETag"] == '"2"'

    stale = await client.put(
        f"/customers/{customer_id}", json={"balance": 2}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert "version is now 2" in stale.json()["message"]
    read = await client.get(f"/customers/{customer_id}")
    assert read.json()["balance"] == 1
    assert read.headers["ETag"] == '"2"'

    for accepted in ('"7", "2"', "*"):
        answer = await client.put(
            f"/customers/{customer_id}", json={"n": accepted}, headers={"If-Match": accepted}
        )
        assert answer.status_code == 204, accepted
    assert (await client.get(f"/customers/{customer_id}")).headers["ETag"] == '"4"'


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param('W/"1"', 412, id="weak-tag-never-matches"),
        pytest.param('"abc"', 412, id="foreign-tag"),
        pytest.param('"01"', 412, id="same-number-other-text"),
        pytest.param("1", 400, id="unquoted"),
        pytest.param('"1", junk', 400, id="junk-in-list"),
    ],
)
async def test_if_match_that_does_not_match_changes_nothing(
    client: httpx.AsyncClient, header: str, status: int
) -> None:
    customer = await create(client, DANILO)
    for answer in (
        await client.put(
            f"/customers/{customer['id']}", json={"balance": 0}, headers={"If-Match": header}
        ),
        await client.delete(f"/customers/{customer['id']}", headers={"If-Match": header}),
    ):
        assert answer.status_code == status
        assert answer.json()["message"]
    read = await client.get(f"/customers/{customer['id']}")
    assert read.json() == customer
    assert read.headers["ETag"] == '"1"'


async def test_a_delete_with_a_stale_if_match_is_412(client: httpx.AsyncClient) -> None:
    customer = await create(client, DANILO)
    await client.put(f"/customers/{customer['id']}", json={"balance": 0})
    stale = await client.delete(f"/customers/{customer['id']}", headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    current = await client.delete(f"/customers/{customer['id']}", headers={"If-Match": '"2"'})
    assert current.status_code == 204


async def test_if_none_match_answers_304(client: httpx.AsyncClient) -> None:
    customer = await create(client, DANILO)
    unchanged = await client.get(f"/customers/{customer['id']}", headers={"If-None-Match": '"1"'})
    assert unchanged.status_code == 304
    assert unchanged.headers["ETag"] == '"1"'
    await client.put(f"/customers/{customer['id']}", json={"balance": 0})
    changed = await client.get(f"/customers/{customer['id']}", headers={"If-None-Match": '"1"'})
    assert changed.status_code == 200
    assert changed.json()["balance"] == 0


async def test_concurrent_conditional_updates_exactly_one_wins(client: httpx.AsyncClient) -> None:
    customer = await create(client, DANILO)
    answers = await asyncio.gather(
        *(
            client.put(
                f"/customers/{customer['id']}", json={"balance": n}, headers={"If-Match": '"1"'}
            )
            for n in range(30)
        )
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [204] + [412] * 29
    winner = next(n for n, answer in enumerate(answers) if answer.status_code == 204)
    read = await client.get(f"/customers/{customer['id']}")
    assert read.json()["balance"] == winner
    assert read.headers["ETag"] == '"2"'


# Listing -----------------------------------------------------------------------------------


async def test_listing_pages_through_every_shard_exactly_once_while_others_write(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    originals = await asyncio.gather(*(create(client, {"n": n}) for n in range(240)))
    original_ids = {customer["id"] for customer in originals}
    shards = {shard_of(redis, keys.customer_key(cid)) for cid in original_ids}
    assert len(shards) == 3

    stop = asyncio.Event()
    churned: set[str] = set()

    async def churn() -> None:
        # Others keep creating customers and deleting the ones they created.
        while not stop.is_set():
            extra = await create(client, {"churn": True})
            churned.add(extra["id"])
            assert (await client.delete(f"/customers/{extra['id']}")).status_code == 204

    writers = [asyncio.create_task(churn()) for _ in range(3)]
    try:
        listed = await list_all(client, limit=7)
    finally:
        stop.set()
        await asyncio.gather(*writers)

    listed_ids = [customer["id"] for customer in listed]
    assert len(listed_ids) == len(set(listed_ids)), "a customer was listed twice"
    assert original_ids <= set(listed_ids), "a customer was missed"
    assert set(listed_ids) - original_ids <= churned
    assert churned


async def test_a_page_reads_a_bounded_number_of_emptied_slots(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    # Every slot once held a customer, all deleted since: pages stay cheap and still end.
    await redis.zadd(keys.INDEX.registry_key, {str(slot): slot for slot in range(16384)})
    survivor = await create(client, {"n": 1})
    pages = 0
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/customers", params=params)).json()
        pages += 1
        found += body["customers"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert found == [survivor]
    assert 1 < pages <= 16384 // index.MAX_SLOTS_PER_PAGE


async def test_listing_an_empty_database(client: httpx.AsyncClient) -> None:
    answer = await client.get("/customers")
    assert answer.status_code == 200
    assert answer.json() == {"customers": [], "next_cursor": None}


async def test_default_page_is_100(client: httpx.AsyncClient) -> None:
    await asyncio.gather(*(create(client, {"n": n}) for n in range(101)))
    first = (await client.get("/customers")).json()
    assert len(first["customers"]) == 100
    second = (await client.get("/customers", params={"cursor": first["next_cursor"]})).json()
    assert len(second["customers"]) == 1
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"limit": 0}, "Invalid query parameter 'limit'", id="zero"),
        pytest.param({"limit": 1001}, "Invalid query parameter 'limit'", id="too-big"),
        pytest.param({"limit": "x"}, "Invalid query parameter 'limit'", id="not-a-number"),
        pytest.param({"cursor": "junk"}, "not a cursor this service returned", id="junk-cursor"),
        pytest.param({"cursor": "MTo5OTk5OTo"}, "not a cursor", id="slot-out-of-range"),
    ],
)
async def test_bad_listing_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    answer = await client.get("/customers", params=params)
    assert answer.status_code == 422
    assert message in answer.json()["message"]


# Bad input ---------------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"{not json", "Request body is not valid JSON", id="invalid-json"),
    pytest.param(b'[{"a": 1}]', "Request body must be a JSON object", id="array"),
    pytest.param(b"42", "Request body must be a JSON object", id="number"),
    pytest.param(b"", "Request body must be a JSON object", id="empty-body"),
    pytest.param(b"{}", "a customer needs at least one field", id="empty-object"),
    pytest.param(
        b'{"name": "x", "address": {"city": "London"}}',
        "Invalid body field 'address': must be a string, number, boolean or null, not an object",
        id="nested-object",
    ),
    pytest.param(b'{"tags": ["a"]}', "Invalid body field 'tags'", id="array-value"),
    pytest.param(b'{"id": "mine", "name": "x"}', "'id' is the customer's id", id="id-field"),
    pytest.param(b'{"balance": NaN}', "must be finite", id="nan"),
    pytest.param(b'{"balance": 1e999}', "must be finite", id="infinity"),
    pytest.param(b'{"balance": ' + b"9" * 5000 + b"}", "could not be parsed", id="huge-integer"),
    pytest.param(b'{"": "x"}', "field names", id="empty-field-name"),
    pytest.param(b'{"name": "\\ud800"}', "lone surrogate", id="lone-surrogate-value"),
    pytest.param(b'{"\\udc00": 1}', "lone surrogate", id="lone-surrogate-name"),
    pytest.param(b'{"bio": "' + b"x" * 65537 + b'"}', "longer than", id="huge-value"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_body_is_422_and_writes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, body: bytes, message: str
) -> None:
    answer = await client.post("/customers", content=body, headers=JSON)
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, body: bytes, message: str
) -> None:
    customer = await create(client, DANILO)
    before = {key: await redis.dump(key) for key in await data_keys(redis)}
    answer = await client.put(f"/customers/{customer['id']}", content=body, headers=JSON)
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert {key: await redis.dump(key) for key in await data_keys(redis)} == before


async def test_too_many_fields_is_422(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    answer = await client.post("/customers", json={f"f{i}": i for i in range(257)})
    assert answer.status_code == 422
    assert "at most 256 fields" in answer.json()["message"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize("customer_id", ["42", "not-a-uuid", "customer:x"])
async def test_an_id_that_is_not_a_uuid_is_422(client: httpx.AsyncClient, customer_id: str) -> None:
    for answer in (
        await client.get(f"/customers/{customer_id}"),
        await client.put(f"/customers/{customer_id}", json={"a": 1}),
        await client.delete(f"/customers/{customer_id}"),
    ):
        assert answer.status_code == 422
        assert "Invalid path parameter 'customer_id'" in answer.json()["message"]
