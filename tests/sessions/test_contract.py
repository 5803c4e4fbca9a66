"""The sessions' OpenAPI contract: the published rules accept exactly what the server accepts,
every answer is declared with its media type, and the fuzzer's findings stay fixed (against the
real cluster)."""

from __future__ import annotations

import random
import re
from typing import Annotated, Any

import httpx
import jsonschema_rs
import pytest
from pydantic import Field, TypeAdapter, ValidationError
from redis.asyncio.cluster import RedisCluster

from app.sessions.schemas import (
    MAX_KEYS_PER_UPDATE,
    USER_NAME_PATTERN,
    SessionUpdate,
    check_user_name,
)
from tests.sessions.test_sessions import (
    COOKIE,
    csrf_from,
    log_in,
    redis_key,
    session_data,
    session_id_of,
)

ROUNDS = 20_000
# Characters around the rules' edges: every whitespace Python strips, the control characters,
# and a few ordinary ones.
WHITESPACE = [chr(code) for code in range(0x3100) if chr(code).isspace()]
EDGE_CHARACTERS = [
    *WHITESPACE,
    *(chr(code) for code in range(0x20)),
    "\x7f",
    "\x80",
    "\x9f",
    "\u200b",
    "\ufeff",
    "a",
    "Z",
    "ú",
    "🙂",
    " ",
]
# The rule as both engines read it: pydantic's (Rust regex) and the fuzzer's (Python's re).
RUST_PATTERN = TypeAdapter(Annotated[str, Field(pattern=USER_NAME_PATTERN)])


def checked(user_name: str) -> bool:
    try:
        check_user_name(user_name)
    except ValueError:
        return False
    return True


def rust_accepts(user_name: str) -> bool:
    try:
        RUST_PATTERN.validate_python(user_name)
    except ValidationError:
        return False
    return True


def test_the_user_name_pattern_is_the_user_name_check() -> None:
    rng = random.Random(1)
    texts = [*EDGE_CHARACTERS, *(a + b for a in EDGE_CHARACTERS for b in EDGE_CHARACTERS)]
    texts += ["".join(rng.choices(EDGE_CHARACTERS, k=rng.randint(1, 8))) for _ in range(ROUNDS)]
    for text in texts:
        expected = checked(text)
        assert (re.search(USER_NAME_PATTERN, text) is not None) is expected, repr(text)
        assert rust_accepts(text) is expected, repr(text)


def session_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in openapi["paths"].items()
        if path.startswith("/session")
        for method, operation in item.items()
    ]


def test_the_pages_declare_html_and_their_errors_json(openapi: dict[str, Any]) -> None:
    operations = session_operations(openapi)
    assert len(operations) == 8
    for path, method, operation in operations:
        for code, answer in operation["responses"].items():
            content = set(answer.get("content", {}))
            if code == "200" and path in {"/session", "/session/save"}:
                assert content == {"text/html"}, (path, code)
            elif code == "303":
                assert content == set()
                assert answer["headers"]["Location"]["required"] is True
            else:
                assert content == {"application/json"}, (method, path, code)
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.removeprefix("#/components/schemas/") in openapi["components"]["schemas"]
        assert operation["summary"], (method, path)
        assert operation["description"], (method, path)


def test_every_answer_a_write_can_give_is_declared(openapi: dict[str, Any]) -> None:
    patch = openapi["paths"]["/session/data"]["patch"]["responses"]
    assert {"200", "403", "409", "413", "422", "503"} <= set(patch)
    for path in ("/session/save", "/session/logout", "/session/logout-everywhere"):
        assert {"303", "403", "422"} <= set(openapi["paths"][path]["post"]["responses"])


def test_the_links_carry_the_session_on(openapi: dict[str, Any]) -> None:
    links = openapi["paths"]["/session/data"]["get"]["responses"]["200"]["links"]
    update = links["UpdateSessionData"]
    assert update["operationRef"] == "#/paths/~1session~1data/patch"
    assert update["parameters"]["header.x-csrf-token"] == "$response.body#/csrf_token"
    assert update["parameters"][f"cookie.{COOKIE}"].startswith("$response.header.Set-Cookie")
    assert links["LogOut"]["requestBody"] == {"csrf_token": "$response.body#/csrf_token"}
    saved = openapi["paths"]["/session/save"]["post"]["responses"]["303"]["links"]
    assert saved["ListUserSessions"]["operationRef"] == "#/paths/~1session~1all/get"


# Finding: POST /session/logout and /session/logout-everywhere answered 500 for a CSRF token
# with non-ASCII characters (hmac.compare_digest refuses such a str); so did the header of
# PATCH /session/data, and a cookie with a valid id and a non-ASCII signature.
@pytest.mark.parametrize("token", ["ß" * 43, "擞ý\U0008e289+9\U000ff9fcU", "©" + "A" * 42])
async def test_a_non_ascii_csrf_token_is_403_and_changes_nothing(
    client: httpx.AsyncClient, token: str
) -> None:
    await log_in(client, "ana")
    before = await session_data(client)
    for path in ("/session/logout", "/session/logout-everywhere"):
        answer = await client.post(path, data={"csrf_token": token})
        assert answer.status_code == 403, answer.text
        assert "CSRF token" in answer.json()["message"]
    answer = await client.post("/session/save", data={"user_name": "eve", "csrf_token": token})
    assert answer.status_code == 403
    assert await session_data(client) == before


async def test_a_non_ascii_csrf_header_is_403(client: httpx.AsyncClient) -> None:
    await log_in(client, "ana")
    # A header's bytes beyond ASCII reach the app as Latin-1 characters.
    answer = await client.patch(
        "/session/data", json={"a": 1}, headers={b"X-CSRF-Token": "é".encode("latin-1")}
    )
    assert answer.status_code == 403
    assert await session_data(client) == {"user_name": "ana"}


async def test_a_cookie_with_a_non_ascii_signature_starts_a_new_session(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await log_in(client, "ana")
    session_id = session_id_of(client)
    # Set through the header: the cookie jar would refuse these bytes.
    client.cookies.clear()
    answer = await client.get(
        "/session/data", headers={b"Cookie": f"{COOKIE}={session_id}.é".encode("latin-1")}
    )
    assert answer.status_code == 200
    assert answer.json()["data"] == {}
    assert str(session_id) not in answer.headers["set-cookie"]
    assert await redis.exists(redis_key(session_id)) == 1


# Finding: schema-valid requests were refused: a user name with whitespace controls around it,
# and {} on PATCH /session/data (now refused by the schema too: minProperties).
@pytest.mark.parametrize(
    ("typed", "saved"),
    [
        pytest.param("\tAna Lúcia\n", "Ana Lúcia", id="surrounding-controls"),
        pytest.param(" a\u0085b\u3000", "a\u0085b", id="inner-whitespace"),
        pytest.param("x" * 256, "x" * 256, id="longest"),
    ],
)
async def test_a_user_name_the_pattern_accepts_is_saved(
    client: httpx.AsyncClient, typed: str, saved: str
) -> None:
    assert re.search(USER_NAME_PATTERN, typed)
    token = csrf_from((await client.get("/session/save")).text)
    answer = await client.post("/session/save", data={"user_name": typed, "csrf_token": token})
    assert answer.status_code == 303, answer.text
    assert await session_data(client) == {"user_name": saved}


async def test_an_extra_form_field_is_422_as_the_schema_says(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    for name in ("SaveForm", "CsrfForm"):
        assert openapi["components"]["schemas"][name]["additionalProperties"] is False
    token = csrf_from((await client.get("/session/save")).text)
    answer = await client.post(
        "/session/save", data={"user_name": "ana", "csrf_token": token, "remember": "1"}
    )
    assert answer.status_code == 422
    assert "remember" in answer.json()["message"]
    assert await session_data(client) == {}
    answer = await client.post("/session/logout", data={"csrf_token": token, "x": "1"})
    assert answer.status_code == 422


async def test_a_logout_without_a_body_is_403(client: httpx.AsyncClient) -> None:
    await log_in(client, "ana")
    for path in ("/session/logout", "/session/logout-everywhere"):
        answer = await client.post(path)
        assert answer.status_code == 403
    assert await session_data(client) == {"user_name": "ana"}


def update_bodies() -> list[dict[str, Any]]:
    many = {f"k{n}": n for n in range(MAX_KEYS_PER_UPDATE)}
    return [
        {},
        {"a": 1},
        {"user_name": "x"},
        {"User_Name": "x"},
        {"": 1},
        {"k" * 256: None},
        {"k" * 257: 1},
        many,
        {**many, "one-more": 1},
        {"a": {"b": [1, "ü", None]}},
    ]


def update_accepted(body: dict[str, Any]) -> bool:
    try:
        TypeAdapter(SessionUpdate).validate_python(body)
    except ValidationError:
        return False
    return True


def test_the_update_schema_is_the_update_check(openapi: dict[str, Any]) -> None:
    validator = jsonschema_rs.Draft202012Validator(
        openapi["components"]["schemas"]["SessionUpdate"]
    )
    for body in update_bodies():
        assert validator.is_valid(body) is update_accepted(body), body


async def test_the_server_answers_updates_as_the_schema_says(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    validator = jsonschema_rs.Draft202012Validator(
        openapi["components"]["schemas"]["SessionUpdate"]
    )
    token = (await client.get("/session/data")).json()["csrf_token"]
    for body in update_bodies():
        answer = await client.patch("/session/data", json=body, headers={"X-CSRF-Token": token})
        assert answer.status_code == (200 if validator.is_valid(body) else 422), body
