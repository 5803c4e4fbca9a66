"""The customer service's OpenAPI contract: the schema states the rules the server enforces."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.customers.schemas import CURSOR_PATTERN, PRECONDITION_PATTERN, UUID_PATTERN
from app.etags import none_match, parse_if_match
from app.records.index import Cursor

DANILO = {"name": "Danilo", "balance": 1000}
ONE = "/customers/{customer_id}"


async def create(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.post("/customers", json=DANILO)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PRECONDITION_PATTERN, fullmatch=True))
def test_every_published_precondition_is_read(value: str) -> None:
    if value:
        parse_if_match(value)
        none_match(value, 1)


@pytest.mark.parametrize("value", ["1", '"1", junk', "null", '"a,b"', '"1",,"2"', " *"])
def test_what_the_service_refuses_the_pattern_refuses(value: str) -> None:
    assert re.fullmatch(PRECONDITION_PATTERN, value) is None


@settings(max_examples=300, deadline=None)
@given(st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_every_published_cursor_is_one_the_service_reads(text: str) -> None:
    cursor = Cursor.decode(text)
    assert cursor.encode() == text


def test_the_parameters_state_their_rules(openapi: dict[str, Any]) -> None:
    for method, operation in openapi["paths"][ONE].items():
        parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
        assert parameters["customer_id"]["pattern"] == UUID_PATTERN
        header = "if-none-match" if method == "get" else "if-match"
        # A plain string (no null branch, which a client could only send as the text "null").
        assert parameters[header] == {
            "type": "string",
            "maxLength": 1024,
            "pattern": PRECONDITION_PATTERN,
            "title": header.title(),
        }
    listing = {p["name"]: p["schema"] for p in openapi["paths"]["/customers"]["get"]["parameters"]}
    assert listing["cursor"]["pattern"] == CURSOR_PATTERN
    assert "anyOf" not in listing["cursor"]


def test_the_body_states_the_bounds_of_a_customer(openapi: dict[str, Any]) -> None:
    body = openapi["components"]["schemas"]["CustomerFields"]
    assert (body["minProperties"], body["maxProperties"]) == (1, 256)
    assert body["propertyNames"] == {"minLength": 1, "maxLength": 256, "not": {"enum": ["id"]}}
    assert body["additionalProperties"] == {
        "anyOf": [
            {"type": "string", "maxLength": 65536},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
        ]
    }
    public = openapi["components"]["schemas"]["CustomerPublic"]
    assert public["required"] == ["id"]


def test_every_status_is_documented_and_create_links_to_the_rest(openapi: dict[str, Any]) -> None:
    expected = {
        ("/customers", "post"): {"201", "409"},
        ("/customers", "get"): {"200"},
        (ONE, "get"): {"200", "304", "400", "404"},
        (ONE, "put"): {"204", "400", "404", "412"},
        (ONE, "delete"): {"204", "400", "404", "412"},
    }
    for (path, method), codes in expected.items():
        operation = openapi["paths"][path][method]
        assert operation["summary"]
        assert operation["description"]
        assert codes <= set(operation["responses"]), (path, method)
    links = openapi["paths"]["/customers"]["post"]["responses"]["201"]["links"]
    targets = {openapi["paths"][ONE][method]["operationId"] for method in ("get", "put", "delete")}
    assert {link["operationId"] for link in links.values()} == targets
    assert all(
        link["parameters"] == {"customer_id": "$response.body#/id"} for link in links.values()
    )


async def test_an_empty_if_match_names_no_version(client: httpx.AsyncClient) -> None:
    customer = await create(client)
    one = f"/customers/{customer['id']}"
    for answer in (
        await client.put(one, json={"balance": 0}, headers={"If-Match": ""}),
        await client.delete(one, headers={"If-Match": ""}),
    ):
        assert answer.status_code == 412
    read = await client.get(one, headers={"If-None-Match": ""})
    assert read.status_code == 200
    assert read.json() == customer


@pytest.mark.parametrize("header", ['"a,b"', "null", "0"])
async def test_a_malformed_precondition_is_the_documented_400(
    client: httpx.AsyncClient, header: str
) -> None:
    customer = await create(client)
    one = f"/customers/{customer['id']}"
    for answer in (
        await client.put(one, json={"balance": 0}, headers={"If-Match": header}),
        await client.delete(one, headers={"If-Match": header}),
        await client.get(one, headers={"If-None-Match": header}),
    ):
        assert answer.status_code == 400
        assert "entity tags" in answer.json()["message"]
    assert (await client.get(one)).json() == customer


async def test_a_reused_idempotency_key_is_the_documented_409(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-1"}
    assert (await client.post("/customers", json=DANILO, headers=headers)).status_code == 201
    other = await client.post("/customers", json={"name": "Ana"}, headers=headers)
    assert other.status_code == 409


async def test_an_uppercase_id_names_the_same_customer(client: httpx.AsyncClient) -> None:
    customer = await create(client)
    read = await client.get(f"/customers/{customer['id'].upper()}")
    assert read.status_code == 200
    assert read.json() == customer


@pytest.mark.parametrize(
    "customer_id",
    [
        pytest.param(uuid.UUID(int=7).hex, id="no-hyphens"),
        pytest.param("{" + str(uuid.UUID(int=7)) + "}", id="braces"),
        pytest.param("urn:uuid:" + str(uuid.UUID(int=7)), id="urn"),
    ],
)
async def test_only_the_hyphenated_form_is_an_id(
    client: httpx.AsyncClient, customer_id: str
) -> None:
    answer = await client.get(f"/customers/{customer_id}")
    assert answer.status_code == 422
    assert "Invalid path parameter 'customer_id'" in answer.json()["message"]


@pytest.mark.parametrize(
    "cursor",
    ["0000", "3fff", "1a2b" + str(uuid.UUID(int=0)), "0000" + str(uuid.UUID(int=2**128 - 1))],
)
async def test_every_schema_valid_cursor_is_accepted(
    client: httpx.AsyncClient, cursor: str
) -> None:
    await create(client)
    answer = await client.get("/customers", params={"cursor": cursor, "limit": 5})
    assert answer.status_code == 200, answer.text
    next_cursor = answer.json()["next_cursor"]
    assert next_cursor is None or re.fullmatch(CURSOR_PATTERN, next_cursor)


async def test_returned_cursors_match_the_published_pattern(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(client)
    page = (await client.get("/customers", params={"limit": 1})).json()
    assert re.fullmatch(CURSOR_PATTERN, page["next_cursor"])
    assert (await client.get("/customers", params={"cursor": "MTo5OTk5OTo"})).status_code == 422
