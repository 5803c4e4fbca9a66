"""The user service's OpenAPI contract: the schema states the rules the server enforces."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.cluster import RedisCluster

from app.records.ids import ULID_PATTERN
from app.users.schemas import EMAIL_PATTERN, Email, User
from tests.conftest import data_keys

ANA = {
    "user_name": "ana",
    "first_name": "Ana",
    "last_name": "Silva",
    "email": "ana@example.com",
    "age": 34,
}
EMAIL = TypeAdapter(Email)


def email_accepted(address: str) -> bool:
    try:
        EMAIL.validate_python(address)
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.from_regex(EMAIL_PATTERN, fullmatch=True).filter(lambda a: len(a) <= 320) | st.text())
def test_the_published_email_rule_is_the_one_enforced(address: str) -> None:
    assert email_accepted(address) == (
        len(address) <= 320 and re.fullmatch(EMAIL_PATTERN, address) is not None
    )


@settings(max_examples=300, deadline=None)
@given(st.emails())
def test_addresses_the_earlier_check_accepted_still_read_back(address: str) -> None:
    # Users saved under email-validator's rules must still validate when read.
    email_validator = pytest.importorskip("email_validator")
    try:
        email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return
    assert email_accepted(address)


@pytest.mark.parametrize("address", ["用户@例子.广告", "a@example。com", "Ana.Silva@EXAMPLE.com"])
def test_internationalized_addresses_are_addresses(address: str) -> None:
    assert email_accepted(address)


@pytest.mark.parametrize(
    "address", ["bea@", "x", "a@localhost", "a b@x.com", "a..b@x.com", "@x.com"]
)
def test_what_is_not_an_address_is_refused(address: str) -> None:
    assert not email_accepted(address)


def test_the_schema_states_the_rules(openapi: dict[str, Any]) -> None:
    user = openapi["components"]["schemas"]["User"]
    assert user["additionalProperties"] is False
    assert user["properties"]["email"]["pattern"] == EMAIL_PATTERN
    assert user["properties"]["age"] == {"type": "integer", "exclusiveMinimum": 0, "title": "Age"}
    public = openapi["components"]["schemas"]["UserPublic"]
    assert public["properties"]["pk"]["pattern"] == ULID_PATTERN
    read = openapi["paths"]["/user/read/{pk}"]["get"]
    assert read["parameters"][0]["schema"]["pattern"] == ULID_PATTERN
    save = openapi["paths"]["/user/save"]["post"]
    assert {"201", "409"} <= set(save["responses"])
    assert "404" in read["responses"]
    assert save["summary"]
    assert read["summary"]
    (link,) = save["responses"]["201"]["links"].values()
    assert link == {"operationId": read["operationId"], "parameters": {"pk": "$response.body#/pk"}}


async def test_a_whole_number_written_as_a_float_is_an_integer(
    client: httpx.AsyncClient, redis: RedisCluster
) -> None:
    # JSON Schema's integer includes 34.0; the strict model refused it (a fuzzer finding).
    saved = await client.post("/user/save", json={**ANA, "age": 34.0})
    assert saved.status_code == 201, saved.text
    assert saved.json()["age"] == 34
    assert isinstance(saved.json()["age"], int)
    assert await redis.hget(User.key(saved.json()["pk"]), "age") == "34"


@pytest.mark.parametrize("age", [34.5, True, "34", 0.0])
async def test_what_is_not_a_positive_integer_is_still_refused(
    client: httpx.AsyncClient, redis: RedisCluster, age: object
) -> None:
    answer = await client.post("/user/save", json={**ANA, "age": age})
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["errors"]] == [["body", "age"]]
    assert await data_keys(redis) == set()


async def test_an_unusual_but_valid_address_is_saved_as_sent(client: httpx.AsyncClient) -> None:
    address = "Ĕ!#$%&'*+/=?^_`{|}~-@Ĝ。b.c"
    saved = await client.post("/user/save", json={**ANA, "email": address})
    assert saved.status_code == 201, saved.text
    read = await client.get(f"/user/read/{saved.json()['pk']}")
    assert read.json()["email"] == address
