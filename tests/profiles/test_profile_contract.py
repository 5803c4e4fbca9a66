"""The profile service's OpenAPI contract: the schema states the rules the server enforces."""

from __future__ import annotations

import re
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.cluster import RedisCluster

from app.profiles.schemas import MAX_USER_LENGTH, RESERVED_USER_PATTERN, USER_PATTERN, UserName
from app.records.codec import MAX_FIELD_NAME_LENGTH, MAX_FIELDS, MAX_VALUE_LENGTH

PATH = "/profile/{user}"
USER = TypeAdapter(UserName)


def accepted(user: str) -> bool:
    try:
        USER.validate_python(user)
    except ValidationError:
        return False
    return True


def published(user: str) -> bool:
    """Whether the user name is valid by the schema the service publishes."""
    return (
        1 <= len(user) <= MAX_USER_LENGTH
        and re.fullmatch(USER_PATTERN, user) is not None
        and re.match(RESERVED_USER_PATTERN, user) is None
    )


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=MAX_USER_LENGTH + 2)
    | st.from_regex(USER_PATTERN, fullmatch=True)
    | st.sampled_from(
        [
            "events",
            "events:3",
            "events:",
            "events:x",
            "a{",
            "}",
            "a/b",
            "\x7f",
            "\x1f",
            "\n",
            "é",
            "x" * 257,
        ]
    )
)
def test_the_published_user_rule_is_the_one_enforced(user: str) -> None:
    assert accepted(user) == published(user)


def test_the_user_parameter_states_its_rule(openapi: dict[str, Any]) -> None:
    for operation in openapi["paths"][PATH].values():
        (parameter,) = [p for p in operation["parameters"] if p["name"] == "user"]
        schema = parameter["schema"]
        assert schema["pattern"] == USER_PATTERN
        assert schema["not"] == {"pattern": RESERVED_USER_PATTERN}
        assert (schema["minLength"], schema["maxLength"]) == (1, MAX_USER_LENGTH)


def test_the_body_states_the_bounds_of_a_profile(openapi: dict[str, Any]) -> None:
    body = openapi["components"]["schemas"]["ProfileFields"]
    assert body["minProperties"] == 1
    assert body["maxProperties"] == MAX_FIELDS
    assert body["propertyNames"] == {"minLength": 1, "maxLength": MAX_FIELD_NAME_LENGTH}
    assert body["additionalProperties"] == {"type": "string", "maxLength": MAX_VALUE_LENGTH}
    assert body["examples"] == [{"email": "zach@example.com", "username": "Zach"}]


def test_operations_are_documented_and_linked(openapi: dict[str, Any]) -> None:
    operations = openapi["paths"][PATH]
    ids = {operation["operationId"] for operation in operations.values()}
    for method, codes in {
        "post": {"201", "409"},
        "get": {"200", "404"},
        "delete": {"200", "404", "409"},
    }.items():
        operation = operations[method]
        assert operation["summary"]
        assert operation["description"]
        assert codes <= set(operation["responses"])
        for code in codes - {"200", "201"}:
            content = operation["responses"][code]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Message"}
            assert "message" in content["example"]
    links = operations["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == ids - {
        operations["post"]["operationId"]
    }
    assert all(link["parameters"] == {"user": "$request.path.user"} for link in links.values())


async def test_schema_valid_edges_are_accepted(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    widest = {f"{i:03}".ljust(MAX_FIELD_NAME_LENGTH, "n"): "v" for i in range(MAX_FIELDS)}
    longest = {"bio": "x" * MAX_VALUE_LENGTH}
    for user, fields in (
        ("ü ☃ .. *", widest),
        ("x" * MAX_USER_LENGTH, longest),
        ("Events", {"a": ""}),
    ):
        created = await client.post(f"/profile/{user}", json=fields)
        assert created.status_code == 201, created.text
        assert (await client.get(f"/profile/{user}")).json() == fields
        assert await redis.hgetall(f"profile:{user}") == fields
