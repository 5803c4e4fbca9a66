"""The profile service: the seeds' walkthrough, status codes, events and bad input."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.profiles import keys
from tests.conftest import all_events_applied, data_keys, eventually, stored_read_counts

SEED_PROFILES = {
    "zach": {"email": "zach@example.com", "username": "Zach"},
    "roberto": {"email": "roberto@example.com", "username": "Roberto"},
    "akua": {"email": "akua@example.com", "username": "Akua"},
    "ana": {"email": "ana@example.com", "username": "Ana"},
}


async def events(redis: RedisCluster) -> list[dict[str, str]]:
    entries: Any = await redis.xrange(keys.EVENTS_STREAM)
    return [fields for _id, fields in entries]


def lives(events: list[dict[str, str]]) -> list[str]:
    """Return the generations the events name, in the order they first appear."""
    return list(dict.fromkeys(event["generation"] for event in events))


# The seeds' walkthrough ends with the report: profiles and reporting in one process, each as
# its own user (two clients on one cluster).
@pytest.mark.services("profiles", "reporting")
async def test_seed_walkthrough(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    for user, fields in SEED_PROFILES.items():
        created = await client.post(f"/profile/{user}", json=fields)
        assert created.status_code == 201
        assert created.json() == {"message": f"Profile created for: {user}"}

    read = await client.get("/profile/zach")
    assert read.status_code == 200
    assert read.json() == SEED_PROFILES["zach"]

    deleted = await client.delete("/profile/zach")
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "Profile deleted for zach"}

    for user, reads in (("ana", 8), ("roberto", 2), ("akua", 1)):
        for _ in range(reads):
            assert (await client.get(f"/profile/{user}")).status_code == 200

    expected = {
        "results": [
            {"user": "ana", "score": 8},
            {"user": "roberto", "score": 2},
            {"user": "akua", "score": 1},
        ]
    }

    async def reported() -> bool:
        return bool((await client.get("/reporting/profileStats/3")).json() == expected)

    await eventually(reported, what="the seeds' top 3")
    assert await redis.zscore(keys.READ_COUNTS, "zach") is None
    assert (await client.get("/reporting/profileStats/10")).json() == expected

    kinds = [(event["user"], event["type"]) for event in await events(redis)]
    assert kinds[:6] == [
        ("zach", "create"),
        ("roberto", "create"),
        ("akua", "create"),
        ("ana", "create"),
        ("zach", "read"),
        ("zach", "delete"),
    ]
    assert len(kinds) == 6 + 11


async def test_profile_is_the_seeds_hash(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    await client.post("/profile/ana", json={"email": "ana@example.com", "username": "Ana"})
    assert await redis.hgetall("profile:ana") == {"email": "ana@example.com", "username": "Ana"}
    # The seeds' fields, plus the profile's generation (its life: at least the clock in ms).
    [event] = await events(redis)
    assert (event["user"], event["type"]) == ("ana", "create")
    assert int(event["generation"]) >= (time.time() - 60) * 1000

    # Written the seeds' way (HSET on profile:<user>), read through the service.
    await redis.hset("profile:kofi", mapping={"email": "kofi@example.com"})
    answer = await client.get("/profile/kofi")
    assert answer.status_code == 200
    assert answer.json() == {"email": "kofi@example.com"}
    # Never created here: no generation, as the seeds' events.
    assert (await events(redis))[-1] == {"user": "kofi", "type": "read"}


async def test_create_twice_is_409(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    assert (await client.post("/profile/ana", json={"a": "1"})).status_code == 201
    again = await client.post("/profile/ana", json={"a": "2"})
    assert again.status_code == 409
    assert again.json() == {"message": "Profile exists"}
    assert await redis.hgetall("profile:ana") == {"a": "1"}
    assert await redis.xlen(keys.EVENTS_STREAM) == 1


async def test_retry_with_idempotency_key_creates_once(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    headers = {"Idempotency-Key": "req-42"}
    first = await client.post("/profile/ana", json={"a": "1"}, headers=headers)
    retry = await client.post("/profile/ana", json={"a": "1"}, headers=headers)
    other = await client.post("/profile/ana", json={"a": "1"}, headers={"Idempotency-Key": "x"})
    assert (first.status_code, retry.status_code, other.status_code) == (201, 201, 409)
    assert await redis.hgetall("profile:ana") == {"a": "1"}


async def test_missing_profile_is_404(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    read = await client.get("/profile/nobody")
    assert read.status_code == 404
    assert read.json() == {"message": "Profile not found for nobody"}
    gone = await client.delete("/profile/nobody")
    assert gone.status_code == 404
    assert gone.json() == {"message": "Profile not found for nobody"}
    assert await redis.xlen(keys.EVENTS_STREAM) == 0


async def test_delete_then_recreate_counts_from_zero(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await client.post("/profile/ana", json={"a": "1"})
    for _ in range(3):
        await client.get("/profile/ana")
    await client.delete("/profile/ana")
    await client.post("/profile/ana", json={"a": "2"})
    await client.get("/profile/ana")

    await eventually(lambda: all_events_applied(redis), what="all events applied")
    assert await redis.zscore(keys.READ_COUNTS, "ana") == 1


BAD_BODIES = [
    pytest.param(b"{not json", "Request body is not valid JSON", id="invalid-json"),
    pytest.param(b'["a", "b"]', "Request body must be a JSON object", id="array"),
    pytest.param(b'"text"', "Request body must be a JSON object", id="string"),
    pytest.param(b"", "Request body must be a JSON object", id="empty-body"),
    pytest.param(b"{}", "at least one field", id="empty-object"),
    pytest.param(b'{"age": 30}', "Invalid body field 'age'", id="number"),
    pytest.param(b'{"tags": ["a"]}', "Invalid body field 'tags'", id="array-value"),
    pytest.param(b'{"address": {"city": "x"}}', "Invalid body field 'address'", id="nested-object"),
    pytest.param(b'{"bio": null}', "Invalid body field 'bio'", id="null-value"),
    pytest.param(b'{"": "x"}', "field names", id="empty-field-name"),
    pytest.param(b'{"bio": "' + b"x" * 65537 + b'"}', "longer than", id="huge-value"),
    # Was a 500: the value reached Redis and failed to encode.
    pytest.param(b'{"bio": "\\ud800"}', "lone surrogate", id="lone-surrogate-value"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_body_is_422_and_writes_nothing(
    client: httpx.AsyncClient, redis: RedisCluster, body: bytes, message: str
) -> None:
    answer = await client.post(
        "/profile/ana", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert await data_keys(redis) == set()


async def test_too_many_fields_is_422(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    body = {f"f{i}": "v" for i in range(257)}
    answer = await client.post("/profile/ana", json=body)
    assert answer.status_code == 422
    assert "at most 256 fields" in answer.json()["message"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize(
    ("user", "message"),
    [
        pytest.param("a{b}", "must not contain '{' or '}'", id="braces"),
        pytest.param("a%01b", "control characters", id="control"),
        pytest.param("x" * 257, "at most 256 characters", id="too-long"),
    ],
)
async def test_bad_user_name_is_422(
    client: httpx.AsyncClient, redis: RedisCluster, user: str, message: str
) -> None:
    for answer in (
        await client.post(f"/profile/{user}", json={"a": "1"}),
        await client.get(f"/profile/{user}"),
        await client.delete(f"/profile/{user}"),
    ):
        assert answer.status_code == 422
        assert message in answer.json()["message"]
    assert await data_keys(redis) == set()


async def test_unusual_but_valid_user_names(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    for user in ("ana@example.com", "josé", "a b", "*", "x" * 256):
        created = await client.post(f"/profile/{user}", json={"a": "1"})
        assert created.status_code == 201, user
        assert (await client.get(f"/profile/{user}")).json() == {"a": "1"}
        assert await redis.hgetall(f"profile:{user}") == {"a": "1"}


async def test_a_retried_delete_does_not_delete_a_profile_created_since(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await client.post("/profile/ana", json={"a": "1"})
    headers = {"Idempotency-Key": "delete-1"}
    assert (await client.delete("/profile/ana", headers=headers)).status_code == 200
    assert (await client.post("/profile/ana", json={"a": "2"})).status_code == 201
    await client.get("/profile/ana")
    retry = await client.delete("/profile/ana", headers=headers)
    # Answering 200 as the first attempt did would say "deleted" of a profile that is there.
    assert retry.status_code == 409
    assert retry.json() == {
        "message": "This Idempotency-Key deleted the profile of ana, who has a profile again since"
    }
    assert await redis.hgetall("profile:ana") == {"a": "2"}
    # The retry's event names the generation it ended, so the new profile's read still counts.
    first, second = lives(await events(redis))
    assert [(e["type"], e["generation"]) for e in await events(redis)] == [
        ("create", first),
        ("delete", first),
        ("create", second),
        ("read", second),
        ("delete", first),
    ]
    # first + 1 is kept for a profile written again by other code.
    assert int(second) > int(first) + 1
    await eventually(lambda: all_events_applied(redis), what="events applied")
    assert await stored_read_counts(redis) == {"ana": 1}


async def test_a_retried_create_does_not_recreate_a_deleted_profile(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    headers = {"Idempotency-Key": "create-1"}
    assert (await client.post("/profile/ana", json={"a": "1"}, headers=headers)).status_code == 201
    assert (await client.delete("/profile/ana")).status_code == 200
    retry = await client.post("/profile/ana", json={"a": "1"}, headers=headers)
    # Answering 201 as the first attempt did would claim a profile that is gone.
    assert retry.status_code == 409
    assert retry.json() == {
        "message": "The profile this Idempotency-Key created for ana has been deleted since"
    }
    assert await redis.exists("profile:ana") == 0
    [first] = lives(await events(redis))
    assert [(e["type"], e["generation"]) for e in await events(redis)] == [
        ("create", first),
        ("delete", first),
        ("create", first),
    ]


async def test_the_event_stream_is_not_a_user(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    for answer in (
        await client.post("/profile/events", json={"a": "1"}),
        await client.get("/profile/events"),
        await client.delete("/profile/events"),
    ):
        assert answer.status_code == 422
        assert "reserved" in answer.json()["message"]
    assert await redis.type("profile:events") in ("stream", "none")


async def test_an_oversized_body_is_413(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    body = {f"f{i}": "x" * 60000 for i in range(20)}
    answer = await client.post("/profile/ana", json=body)
    assert answer.status_code == 413
    assert "message" in answer.json()
    assert await data_keys(redis) == set()


async def oversized_chunks() -> AsyncIterator[bytes]:
    """A JSON body of about 1.2 MB, sent in chunks with no declared length."""
    yield b'{"bio": "'
    for _ in range(40):
        yield b"x" * 30000
    yield b'"}'


async def test_an_oversized_chunked_body_is_413(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    answer = await client.post(
        "/profile/ana", content=oversized_chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json() == {"message": "Request body is larger than 1048576 bytes"}
    assert await data_keys(redis) == set()


async def test_a_chunked_body_within_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"bio": '
        yield b'"short"}'

    answer = await client.post(
        "/profile/ana", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 201


async def test_a_chunked_body_cannot_hide_behind_a_small_content_length(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    answer = await client.post(
        "/profile/ana",
        content=oversized_chunks(),
        headers={
            "Content-Type": "application/json",
            "Content-Length": "10",
            "Transfer-Encoding": "chunked",
        },
    )
    assert answer.status_code == 413
    assert await data_keys(redis) == set()


async def test_a_profile_written_again_by_the_seeds_code_counts_as_a_new_life(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await client.post("/profile/ana", json={"a": "1"})
    await client.get("/profile/ana")
    await client.delete("/profile/ana")
    await redis.hset("profile:ana", mapping={"a": "seed"})  # the seeds' create
    assert (await client.get("/profile/ana")).json() == {"a": "seed"}
    first, second = lives(await events(redis))
    assert [(e["type"], e["generation"]) for e in await events(redis)] == [
        ("create", first),
        ("read", first),
        ("delete", first),
        ("read", second),
    ]
    assert int(second) == int(first) + 1
    await eventually(lambda: all_events_applied(redis), what="events applied")
    assert await stored_read_counts(redis) == {"ana": 1}
