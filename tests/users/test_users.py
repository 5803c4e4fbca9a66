"""The user service: the patterns post's validated model, unique names and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.records.ids import new_ulid
from app.users.schemas import User
from tests.conftest import data_keys, shard_of

ANA = {
    "user_name": "ana",
    "first_name": "Ana",
    "last_name": "Silva",
    "email": "ana@example.com",
    "age": 34,
    "bio": "Rides bikes.",
}


async def save(client: httpx.AsyncClient, user: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/user/save", json=user)
    assert answer.status_code == 201, answer.text
    saved: dict[str, Any] = answer.json()
    return saved


async def test_save_and_read(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    saved = await save(client, ANA)
    pk = saved.pop("pk")
    assert saved == ANA
    read = await client.get(f"/user/read/{pk}")
    assert read.status_code == 200
    assert read.json() == {**ANA, "pk": pk}
    assert isinstance(read.json()["age"], int)
    # One hash under the explicit prefix, values as plain text.
    assert await redis.hgetall(User.key(pk)) == {**ANA, "age": "34"}
    assert User.key(pk).startswith("user:{")


async def test_the_email_address_is_kept_as_sent(client: httpx.AsyncClient) -> None:
    saved = await save(client, {**ANA, "email": "Ana.Silva@EXAMPLE.com"})
    read = (await client.get(f"/user/read/{saved['pk']}")).json()
    assert read["email"] == saved["email"] == "Ana.Silva@EXAMPLE.com"


async def test_bio_is_optional_and_reads_back_as_null(client: httpx.AsyncClient) -> None:
    without_bio = {key: value for key, value in ANA.items() if key != "bio"}
    saved = await save(client, without_bio)
    assert saved["bio"] is None
    assert (await client.get(f"/user/read/{saved['pk']}")).json()["bio"] is None
    explicit_null = await save(client, {**ANA, "user_name": "bea", "bio": None})
    assert (await client.get(f"/user/read/{explicit_null['pk']}")).json()["bio"] is None


async def test_pks_sort_by_creation_and_users_spread_over_the_shards(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    pks = []
    for n in range(30):
        pks.append((await save(client, {**ANA, "user_name": f"user-{n}"}))["pk"])
        await asyncio.sleep(0.002)
    assert pks == sorted(pks)
    assert len(set(pks)) == 30
    assert len({shard_of(redis, User.key(pk)) for pk in pks}) == 3


async def test_a_taken_user_name_is_409(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    await save(client, ANA)
    before = await data_keys(redis)
    for name in ("ana", "ANA", "Ana"):
        again = await client.post("/user/save", json={**ANA, "user_name": name})
        assert again.status_code == 409
        assert again.json() == {"message": f"A user with user_name {name!r} exists"}
    assert await data_keys(redis) == before


async def test_concurrent_saves_of_one_name_exactly_one_wins(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    answers = await asyncio.gather(
        *(client.post("/user/save", json={**ANA, "first_name": f"n{n}"}) for n in range(50))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 49
    winner = next(answer.json() for answer in answers if answer.status_code == 201)
    user_hashes = [key for key in await data_keys(redis) if ":unique:" not in key]
    assert user_hashes == [User.key(winner["pk"])]
    assert (await client.get(f"/user/read/{winner['pk']}")).json() == winner


async def test_unknown_pk_is_404(client: httpx.AsyncClient) -> None:
    pk = new_ulid(slot=42)
    answer = await client.get(f"/user/read/{pk}")
    assert answer.status_code == 404
    assert answer.json() == {"message": f"No user with pk {pk}"}


@pytest.mark.parametrize(
    ("pk", "message"),
    [
        pytest.param("42", "must be 26 characters", id="short"),
        pytest.param("01JD3ZZZZZZZZZZZZZZZZZZZZU", "'U' is not a Crockford", id="bad-char"),
        pytest.param("8" + "0" * 25, "larger than 128 bits", id="too-big"),
    ],
)
async def test_malformed_pk_is_422(client: httpx.AsyncClient, pk: str, message: str) -> None:
    answer = await client.get(f"/user/read/{pk}")
    assert answer.status_code == 422
    assert "Invalid path parameter 'pk'" in answer.json()["message"]
    assert message in answer.json()["message"]


BAD_USERS = [
    pytest.param({"email": "not-an-email"}, ["email"], id="email"),
    pytest.param({"email": "ana@"}, ["email"], id="email-without-domain"),
    pytest.param({"age": 0}, ["age"], id="age-zero"),
    pytest.param({"age": -3}, ["age"], id="age-negative"),
    pytest.param({"age": "34"}, ["age"], id="age-as-string"),
    pytest.param({"age": 34.5}, ["age"], id="age-fraction"),
    pytest.param({"age": True}, ["age"], id="age-boolean"),
    pytest.param({"user_name": 7}, ["user_name"], id="name-number"),
    pytest.param({"user_name": ""}, ["user_name"], id="name-empty"),
    pytest.param({"bio": 5}, ["bio"], id="bio-number"),
    pytest.param({"nickname": "x"}, ["nickname"], id="unknown-field"),
    pytest.param(
        {"email": "x", "age": 0, "last_name": None}, ["email", "age", "last_name"], id="several"
    ),
]


@pytest.mark.parametrize(("change", "fields"), BAD_USERS)
async def test_invalid_user_is_422_naming_each_field_and_writes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, change: dict[str, Any], fields: list[str]
) -> None:
    answer = await client.post("/user/save", json={**ANA, **change})
    assert answer.status_code == 422
    body = answer.json()
    assert sorted(error["loc"][-1] for error in body["errors"]) == sorted(fields)
    for field in fields:
        assert f"Invalid body field '{field}'" in body["message"]
    assert await data_keys(redis) == set()


async def test_missing_fields_are_named(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    answer = await client.post("/user/save", json={"user_name": "ana"})
    assert answer.status_code == 422
    missing = sorted(error["loc"][-1] for error in answer.json()["errors"])
    assert missing == ["age", "email", "first_name", "last_name"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{oops", "not valid JSON", id="invalid-json"),
        pytest.param(b"[]", "must be a JSON object", id="array"),
    ],
)
async def test_non_object_bodies_are_422(
    client: httpx.AsyncClient, redis: RedisCluster, body: bytes, message: str
) -> None:
    answer = await client.post(
        "/user/save", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert await data_keys(redis) == set()
