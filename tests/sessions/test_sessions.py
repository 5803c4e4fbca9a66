"""Durable sessions: the form round trip, isolation, tampering, fixation, logout, expiry,
log out everywhere, CSRF and concurrent writes, against the real cluster."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.sessions import keys
from app.sessions.tokens import SessionId, Signer
from tests.conftest import running_app

COOKIE = "session"
Clients = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


def session_settings(settings: Settings, **sessions: Any) -> Settings:
    return settings.model_copy(update={"sessions": settings.sessions.model_copy(update=sessions)})


@pytest.fixture
def clients(settings: Settings) -> Clients:
    """Open independent browsers (cookie jars) on one running app."""

    @asynccontextmanager
    async def open_client() -> AsyncIterator[httpx.AsyncClient]:
        async with running_app(settings) as (http, _state):
            yield http

    return open_client


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def session_id_of(client: httpx.AsyncClient) -> SessionId:
    cookie = client.cookies[COOKIE]
    parsed = SessionId.parse(cookie.rpartition(".")[0])
    assert parsed is not None
    return parsed


def plant(client: httpx.AsyncClient, cookie: str) -> None:
    """Make ``client`` send ``cookie`` as its session cookie, and no other."""
    client.cookies.clear()
    client.cookies.set(COOKIE, cookie, domain="test.local")


def redis_key(session_id: SessionId) -> str:
    return keys.session_key(session_id.tag, session_id.token)


async def log_in(client: httpx.AsyncClient, user_name: str) -> httpx.Response:
    form = await client.get("/session/save")
    saved = await client.post(
        "/session/save", data={"user_name": user_name, "csrf_token": csrf_from(form.text)}
    )
    assert saved.status_code == 303, saved.text
    return saved


async def session_data(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/session/data")
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()["data"]
    return data


async def test_form_round_trip(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    form = await client.get("/session/save")
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert form.headers["cache-control"] == "no-store"
    assert '<input type="text" id="user_name" name="user_name"' in form.text
    first_id = session_id_of(client)
    # Showing the form stores nothing: the form's token is derived from the id.
    assert await redis.exists(redis_key(first_id)) == 0

    saved = await client.post(
        "/session/save", data={"user_name": "ana", "csrf_token": csrf_from(form.text)}
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/session"
    cookie = saved.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP with secure = "auto"

    page = await client.get("/session")
    assert page.status_code == 200
    assert '<strong id="user-name">ana</strong>' in page.text
    assert await session_data(client) == {"user_name": "ana"}

    new_id = session_id_of(client)
    assert new_id != first_id
    stored = await redis.hgetall(redis_key(new_id))
    assert stored["d:user_name"] == '"ana"'
    assert 604000 < await redis.ttl(redis_key(new_id)) <= 604800


async def test_a_second_client_sees_nothing(clients: Clients) -> None:
    async with clients() as ana, clients() as other:
        await log_in(ana, "ana")
        assert await session_data(other) == {}
        page = await other.get("/session")
        assert 'id="no-user-name"' in page.text
        assert "ana" not in page.text


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"), id="signature"),
        pytest.param(lambda c: c[:5] + ("x" if c[5] != "x" else "y") + c[6:], id="session-id"),
        pytest.param(lambda c: c.rpartition(".")[0], id="unsigned"),
        pytest.param(
            lambda c: Signer("another-secret-of-thirty-two-chars!").cookie_value(
                SessionId.parse(c.rpartition(".")[0]) or SessionId.new()
            ),
            id="signed-with-another-secret",
        ),
        pytest.param(lambda c: "garbage", id="garbage"),
    ],
)
async def test_a_tampered_cookie_opens_no_session_and_is_replaced(
    client: httpx.AsyncClient, tamper: Callable[[str], str]
) -> None:
    await log_in(client, "ana")
    genuine = client.cookies[COOKIE]
    plant(client, tamper(genuine))
    answer = await client.get("/session/data")
    assert answer.json()["data"] == {}
    replaced = answer.headers["set-cookie"]
    assert replaced.startswith(f"{COOKIE}=")
    assert genuine not in replaced
    plant(client, genuine)
    assert await session_data(client) == {"user_name": "ana"}


async def test_a_fixed_session_id_is_worthless_after_login(
    clients: Clients, redis: RedisCluster
) -> None:
    async with clients() as attacker, clients() as victim:
        await attacker.get("/session/save")
        planted = attacker.cookies[COOKIE]
        plant(victim, planted)
        await log_in(victim, "victim")
        assert victim.cookies[COOKIE] != planted
        assert await session_data(victim) == {"user_name": "victim"}
        assert await session_data(attacker) == {}
        assert await redis.exists(redis_key(session_id_of(attacker))) == 0


async def test_login_keeps_the_data_and_ends_the_old_session(
    client: httpx.AsyncClient, redis: RedisCluster, settings: Settings
) -> None:
    token = (await client.get("/session/data")).json()["csrf_token"]
    await client.patch("/session/data", json={"cart": [1, 2]}, headers={"X-CSRF-Token": token})
    before = session_id_of(client)
    await log_in(client, "ana")
    assert await session_data(client) == {"cart": [1, 2], "user_name": "ana"}
    assert await redis.exists(redis_key(before)) == 0
    signer = Signer(settings.sessions.secret_key.get_secret_value())
    plant(client, signer.cookie_value(before))
    assert await session_data(client) == {}


async def test_logout(client: httpx.AsyncClient, redis: RedisCluster) -> None:
    await log_in(client, "ana")
    old_cookie = client.cookies[COOKIE]
    old_key = redis_key(session_id_of(client))
    page = await client.get("/session")
    logout = await client.post("/session/logout", data={"csrf_token": csrf_from(page.text)})
    assert logout.status_code == 303
    assert "Max-Age=0" in logout.headers["set-cookie"]
    assert COOKIE not in client.cookies
    assert await redis.exists(old_key) == 0
    # The old cookie, replayed, opens nothing and a write through it cannot revive it.
    plant(client, old_cookie)
    token = (await client.get("/session/data")).json()["csrf_token"]
    write = await client.patch("/session/data", json={"x": 1}, headers={"X-CSRF-Token": token})
    assert write.status_code == 200
    assert await redis.exists(old_key) == 0
    assert session_id_of(client) != SessionId.parse(old_cookie.rpartition(".")[0])


@pytest.mark.slow
async def test_expiry(settings: Settings, redis: RedisCluster) -> None:
    short = session_settings(settings, lifetime_s=1, rolling=False)
    async with running_app(short) as (client, _state):
        await log_in(client, "ana")
        key = redis_key(session_id_of(client))
        assert await session_data(client) == {"user_name": "ana"}
        await asyncio.sleep(1.5)
        assert await session_data(client) == {}
        assert await redis.exists(key) == 0


@pytest.mark.slow
async def test_rolling_expiry_keeps_a_used_session(settings: Settings) -> None:
    short = session_settings(settings, lifetime_s=2, rolling=True)
    async with running_app(short) as (client, _state):
        await log_in(client, "ana")
        for _ in range(4):
            await asyncio.sleep(0.8)
            assert await session_data(client) == {"user_name": "ana"}
        await asyncio.sleep(2.5)
        assert await session_data(client) == {}


async def test_log_out_everywhere(clients: Clients, redis: RedisCluster) -> None:
    async with clients() as laptop, clients() as phone, clients() as tablet, clients() as bob:
        for device in (laptop, phone, tablet):
            await log_in(device, "ana")
        await log_in(bob, "bob")
        await log_in(tablet, "Ana")  # one user: names compare case-folded

        listed = (await phone.get("/session/all")).json()
        assert listed["user_name"] == "ana"
        assert len(listed["sessions"]) == 3
        assert [entry["current"] for entry in listed["sessions"]].count(True) == 1
        ids = {str(session_id_of(device)) for device in (laptop, phone, tablet)}
        assert not {entry["id"] for entry in listed["sessions"]} & ids  # never the real ids

        page = await phone.get("/session")
        assert page.text.count("<tr><td>") == 3 + 1  # three sessions and the data row
        ended = await phone.post(
            "/session/logout-everywhere", data={"csrf_token": csrf_from(page.text)}
        )
        assert ended.status_code == 303
        for device in (laptop, phone, tablet):
            assert await session_data(device) == {}
        assert await session_data(bob) == {"user_name": "bob"}
        index = keys.user_index_key(keys.user_tag("ana"))
        entries = await redis.zrange(index, "[ana\0", "(ana\x01", bylex=True)
        assert entries == []  # the index may hold other users of that slot, but none of ana's
        assert (await phone.get("/session/all")).status_code == 401


async def test_concurrent_writes_to_different_keys_all_stay(client: httpx.AsyncClient) -> None:
    await log_in(client, "ana")
    token = (await client.get("/session/data")).json()["csrf_token"]
    answers = await asyncio.gather(
        *(
            client.patch("/session/data", json={f"k{n}": n}, headers={"X-CSRF-Token": token})
            for n in range(40)
        )
    )
    assert {answer.status_code for answer in answers} == {200}
    assert await session_data(client) == {"user_name": "ana", **{f"k{n}": n for n in range(40)}}
    removed = await client.patch(
        "/session/data", json={"k0": None, "k1": {"a": [1]}}, headers={"X-CSRF-Token": token}
    )
    assert removed.json()["data"]["k1"] == {"a": [1]}
    assert "k0" not in await session_data(client)


async def test_forms_and_writes_need_the_sessions_csrf_token(
    clients: Clients, redis: RedisCluster
) -> None:
    async with clients() as victim, clients() as attacker:
        await log_in(victim, "victim")
        attacker_token = csrf_from((await attacker.get("/session/save")).text)
        before = await session_data(victim)
        for answer in (
            await victim.post("/session/save", data={"user_name": "mallory"}),
            await victim.post(
                "/session/save", data={"user_name": "mallory", "csrf_token": attacker_token}
            ),
            await victim.post("/session/logout", data={"csrf_token": "x"}),
            await victim.post("/session/logout-everywhere", data={}),
            await victim.patch("/session/data", json={"a": 1}),
            await victim.patch("/session/data", json={"a": 1}, headers={"X-CSRF-Token": "x"}),
        ):
            assert answer.status_code == 403
            assert "CSRF token" in answer.json()["message"]
        assert await session_data(victim) == before


@pytest.mark.parametrize(
    ("form", "message"),
    [
        pytest.param({"user_name": ""}, "user_name", id="empty"),
        pytest.param({"user_name": "   "}, "visible character", id="blank"),
        pytest.param({"user_name": "a\u0001b"}, "control characters", id="control"),
        pytest.param({"user_name": "x" * 257}, "at most 256", id="too-long"),
        pytest.param({}, "user_name", id="missing"),
    ],
)
async def test_bad_user_name_is_422_and_changes_nothing(
    client: httpx.AsyncClient, form: dict[str, str], message: str
) -> None:
    token = csrf_from((await client.get("/session/save")).text)
    answer = await client.post("/session/save", data={**form, "csrf_token": token})
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert await session_data(client) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"[1]", "must be a JSON object", id="array"),
        pytest.param(b"{}", "at least one session key", id="empty"),
        pytest.param(b'{"user_name": "x"}', "POST /session/save", id="user-name"),
        pytest.param(b'{"n": NaN}', "finite", id="nan"),
        pytest.param(b'{"": 1}', "1 to 256 characters", id="empty-key"),
        pytest.param(b'{"a": {"b": ["\\ud800"]}}', "lone surrogate", id="nested-lone-surrogate"),
    ],
)
async def test_bad_session_update_is_422(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    token = (await client.get("/session/data")).json()["csrf_token"]
    answer = await client.patch(
        "/session/data",
        content=body,
        headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert await session_data(client) == {}


async def test_secure_cookie_by_configuration(settings: Settings) -> None:
    async with running_app(session_settings(settings, secure="always")) as (client, _state):
        answer = await client.get("/session/data")
        assert "; Secure" in answer.headers["set-cookie"]
    async with running_app(session_settings(settings, cookie_name="sid")) as (client, _state):
        answer = await client.get("/session/data")
        assert answer.headers["set-cookie"].startswith("sid=")


async def test_https_requests_get_a_secure_cookie_by_default(settings: Settings) -> None:
    async with running_app(settings) as (client, _state):
        answer = await client.get("https://test/session/data")
        assert "; Secure" in answer.headers["set-cookie"]
