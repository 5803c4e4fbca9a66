"""The messaging operations' OpenAPI contract, against the real cluster: the schema states every
rule the server enforces, every answer matches its declared model, and the fuzzer's findings
stay fixed (a boolean or a string is no number, a whole ``3.0`` is an integer, required fields
are always there, a valid message id is never refused by a rule the schema does not state)."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httpx
import jsonschema_rs
import pytest
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.cluster import RedisCluster

from app.main import create_app
from app.messaging.schemas import MessageId
from app.records.ids import CROCKFORD, ULID_PATTERN, new_ulid
from tests.conftest import data_keys
from tests.messaging.test_queues import counts, make_queue, publish, receive

PATHS = ("/queues", "/topics", "/messages")
SOME_ID = "01M849NDNF0PBFJDFFA0RAZ9YN"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The OpenAPI schema the service publishes."""
    return create_app().openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        if path.startswith(PATHS)
        for method, operation in item.items()
    ]


def conforms(schema: dict[str, Any], answer: httpx.Response, method: str, path: str) -> None:
    """Assert that ``answer`` is documented for the operation and matches its model."""
    documented = schema["paths"][path][method]["responses"]
    assert str(answer.status_code) in documented, (method, path, answer.status_code)
    content = documented[str(answer.status_code)].get("content")
    if content is None:
        assert answer.content == b""
        return
    model = content["application/json"]["schema"]
    jsonschema_rs.validate({**model, "components": schema["components"]}, answer.json())


def test_every_operation_has_a_summary_description_and_error_models(
    schema: dict[str, Any],
) -> None:
    found = operations(schema)
    assert len(found) == 24  # 18, and the six batch operations
    for method, path, operation in found:
        assert operation.get("summary"), (method, path)
        assert operation.get("description"), (method, path)
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")):
                assert "content" in response, (method, path, code)
        if method != "put" and any(part.startswith("{") for part in path.split("/")[:3]):
            # A PUT of a queue or topic creates it; any other operation on one may not find it.
            assert "404" in operation["responses"], (method, path)


def test_request_models_refuse_extra_fields_and_give_examples(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for method, path, operation in operations(schema):
        body = operation.get("requestBody")
        if body is None:
            continue
        refs = re.findall(r"#/components/schemas/(\w+)", str(body))
        assert refs, (method, path)
        for name in refs:
            assert components[name]["additionalProperties"] is False, name
            assert components[name].get("examples"), name


def test_links_name_operations_and_their_parameters(schema: dict[str, Any]) -> None:
    links = 0
    for method, path, operation in operations(schema):
        for response in operation["responses"].values():
            for name, link in response.get("links", {}).items():
                pointer = link["operationRef"].removeprefix("#/paths/")
                target_path, target_method = pointer.rsplit("/", 1)
                target_path = target_path.replace("~1", "/").replace("~0", "~")
                target = schema["paths"][target_path][target_method]
                parameters = {p["name"] for p in target.get("parameters", [])}
                assert set(link["parameters"]) <= parameters, (method, path, name)
                links += 1
    assert links >= 30, "creates link to reads, receives link to settling"


def test_the_message_id_pattern_accepts_what_the_check_accepts() -> None:
    adapter = TypeAdapter(MessageId)
    pattern = re.compile(ULID_PATTERN)
    rng = random.Random(14)
    alphabet = CROCKFORD + "ILOUilou*-8"
    samples = [new_ulid(slot=rng.randrange(16384)) for _ in range(200)]
    samples += ["", "0", "nope", "8" + "0" * 25, "7" + "Z" * 25, SOME_ID.lower(), SOME_ID + "0"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.choice([25, 26, 27])))
                for _ in range(5000)]  # fmt: skip
    for text in samples:
        try:
            adapter.validate_python(text)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == bool(pattern.match(text)), text


@pytest.mark.parametrize(
    ("queue_settings", "named"),
    [
        ({"max_deliveries": True}, "max_deliveries"),
        ({"max_deliveries": "3"}, "max_deliveries"),
        ({"max_deliveries": 2.5}, "max_deliveries"),
        ({"visibility_timeout_s": False}, "visibility_timeout_s"),
        ({"visibility_timeout_s": "30"}, "visibility_timeout_s"),
    ],
)
async def test_a_boolean_or_string_is_no_number_in_queue_settings(
    http: httpx.AsyncClient, redis: RedisCluster, queue_settings: dict[str, Any], named: str
) -> None:
    answer = await http.put("/queues/jobs", json=queue_settings)
    assert answer.status_code == 422
    assert named in answer.json()["message"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"body": 1, "priority": False}, "priority"),
        ({"body": 1, "priority": "5"}, "priority"),
        ({"body": 1, "priority": 1.5}, "priority"),
        ({"body": 1, "delay_s": False}, "delay_s"),
        ({"body": 1, "delay_s": "1"}, "delay_s"),
        ({"body": 1, "dedupe_id": 42}, "dedupe_id"),
    ],
)
async def test_a_boolean_or_string_is_no_number_when_publishing(
    http: httpx.AsyncClient, message: dict[str, Any], named: str
) -> None:
    await make_queue(http, kind="priority")
    for path in ("/queues/jobs/messages", "/topics/news/messages"):
        # Topics take no priority at all: there it is an unknown field, refused as well.
        answer = await http.post(path, json=message)
        assert answer.status_code == 422, (path, answer.text)
        assert named in answer.json()["message"]
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0}


@pytest.mark.parametrize(
    "asked",
    [{"max": True}, {"max": "1"}, {"wait_s": False}, {"wait_s": "0"}, {"consumer": 7}],
)
async def test_a_boolean_or_string_is_no_number_when_receiving(
    http: httpx.AsyncClient, asked: dict[str, Any]
) -> None:
    await make_queue(http)
    await publish(http, "job")
    answer = await http.post("/queues/jobs/receive", json=asked)
    assert answer.status_code == 422, answer.text
    assert next(iter(asked)) in answer.json()["message"]
    assert await counts(http) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead_lettered": 0}
    await http.put("/topics/news")
    await http.put("/topics/news/groups/g")
    answer = await http.post("/topics/news/groups/g/receive", json=asked)
    assert answer.status_code == 422, answer.text


async def test_settling_refuses_a_boolean_for_a_number(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    message_id = await publish(http, "job")
    (got,) = await receive(http)
    base = f"/queues/jobs/messages/{message_id}"
    nack = await http.post(f"{base}/nack", json={"receipt": got["receipt"], "delay_s": True})
    assert nack.status_code == 422
    extend = await http.post(
        f"{base}/extend", json={"receipt": got["receipt"], "visibility_timeout_s": True}
    )
    assert extend.status_code == 422
    redrive = await http.post("/queues/jobs/dead-letters/redrive", json={"max": True})
    assert redrive.status_code == 422
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 1, "dead_lettered": 0}


async def test_a_whole_number_written_with_a_fraction_is_an_integer(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    created = await http.put("/queues/jobs", json={"kind": "priority", "max_deliveries": 3.0})
    assert created.status_code == 201, created.text
    assert created.json()["max_deliveries"] == 3
    published = await http.post("/queues/jobs/messages", json={"body": "x", "priority": 7.0})
    assert published.status_code == 201, published.text
    answer = await http.post("/queues/jobs/receive", json={"max": 1.0, "wait_s": 0})
    conforms(schema, answer, "post", "/queues/{name}/receive")
    assert [(m["body"], m["priority"]) for m in answer.json()["messages"]] == [("x", 7)]
    redrive = await http.post("/queues/jobs/dead-letters/redrive", json={"max": 1e2})
    assert redrive.json() == {"redriven": 0}


async def test_a_valid_message_id_of_no_message_is_404_not_422(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    await http.put("/topics/news")
    await http.put("/topics/news/groups/g")
    for path in [
        f"/queues/jobs/messages/{SOME_ID}/ack",
        f"/queues/jobs/messages/{SOME_ID}/nack",
        f"/topics/news/groups/g/messages/{SOME_ID}/ack",
        f"/topics/news/groups/g/messages/{SOME_ID}/nack",
    ]:
        answer = await http.post(path, json={"receipt": "0" * 256})
        assert answer.status_code == 404, (path, answer.text)
    extend = await http.post(
        f"/queues/jobs/messages/{SOME_ID}/extend",
        json={"receipt": "0", "visibility_timeout_s": 43199.0},
    )
    assert extend.status_code == 404
    assert (await http.get(f"/messages/{SOME_ID}/trace")).status_code == 404
    malformed = await http.get("/messages/0/trace")
    assert malformed.status_code == 422
    assert "ULID" in malformed.json()["message"]


async def test_a_null_body_is_delivered_as_null(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    await make_queue(http)
    await publish(http, None)
    answer = await http.post("/queues/jobs/receive", json={})
    conforms(schema, answer, "post", "/queues/{name}/receive")
    (got,) = answer.json()["messages"]
    assert (got["body"], got["priority"]) == (None, 0)

    await http.put("/topics/news")
    await http.put("/topics/news/groups/g")
    assert (await http.post("/topics/news/messages", json={"body": None})).status_code == 201
    answer = await http.post("/topics/news/groups/g/receive")
    conforms(schema, answer, "post", "/topics/{name}/groups/{group}/receive")
    (got,) = answer.json()["messages"]
    assert got["body"] is None, "a required field is there even when null"
    assert "priority" not in got, "topics have no priorities"


async def test_dead_letter_pages_always_say_where_the_next_one_starts(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    await http.put("/topics/news", json={"visibility_timeout_s": 0.05, "max_deliveries": 1})
    await http.put("/topics/news/groups/g")
    path = "/topics/{name}/groups/{group}/dead-letters"
    empty = await http.get("/topics/news/groups/g/dead-letters")
    conforms(schema, empty, "get", path)
    assert empty.json() == {"dead_letters": [], "total": 0, "next_offset": None}

    for n in range(2):
        await http.post("/topics/news/messages", json={"body": n})
    await http.post("/topics/news/groups/g/receive", json={"max": 2})
    await asyncio.sleep(0.1)
    await http.post("/topics/news/groups/g/receive")
    first = await http.get("/topics/news/groups/g/dead-letters", params={"limit": 1})
    conforms(schema, first, "get", path)
    assert (first.json()["total"], first.json()["next_offset"]) == (2, 1)
    (letter,) = first.json()["dead_letters"]
    assert "priority" not in letter
    last = await http.get("/topics/news/groups/g/dead-letters", params={"offset": 1})
    assert last.json()["next_offset"] is None

    await make_queue(http, visibility_timeout_s=0.05, max_deliveries=1)
    await publish(http, "job")
    await receive(http)
    await asyncio.sleep(0.1)
    await receive(http)
    answer = await http.get("/queues/jobs/dead-letters")
    conforms(schema, answer, "get", "/queues/{name}/dead-letters")
    assert answer.json()["dead_letters"][0]["priority"] == 0


async def test_the_walkthrough_answers_match_their_models(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    """Every status an operation answers is documented, with the body its model states."""
    steps: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("put", "/queues/{name}", "/queues/emails", {"kind": "priority", "max_deliveries": 3}),
        ("put", "/queues/{name}", "/queues/emails", {"kind": "priority"}),
        ("put", "/queues/{name}", "/queues/emails", {"kind": "fifo"}),
        ("get", "/queues/{name}", "/queues/emails", None),
        ("get", "/queues/{name}", "/queues/sms", None),
        ("post", "/queues/{name}/messages", "/queues/emails/messages",
         {"body": {"to": "ops@example.com"}, "priority": 9, "dedupe_id": "alert-42"}),
        ("post", "/queues/{name}/messages", "/queues/emails/messages",
         {"body": {"to": "ops@example.com"}, "priority": 9, "dedupe_id": "alert-42"}),
        ("post", "/queues/{name}/messages", "/queues/sms/messages", {"body": 1}),
        ("post", "/queues/{name}/receive", "/queues/emails/receive", {"consumer": "mailer-1"}),
        ("post", "/queues/{name}/receive", "/queues/sms/receive", None),
        ("get", "/queues/{name}/dead-letters", "/queues/emails/dead-letters", None),
        ("post", "/queues/{name}/dead-letters/redrive", "/queues/emails/dead-letters/redrive",
         None),
        ("put", "/topics/{name}", "/topics/orders", None),
        ("put", "/topics/{name}", "/topics/orders", {"max_deliveries": 2}),
        ("get", "/topics/{name}", "/topics/orders", None),
        ("get", "/topics/{name}", "/topics/none", None),
        ("put", "/topics/{name}/groups/{group}", "/topics/orders/groups/billing", None),
        ("put", "/topics/{name}/groups/{group}", "/topics/orders/groups/billing", None),
        ("put", "/topics/{name}/groups/{group}", "/topics/none/groups/billing", None),
        ("post", "/topics/{name}/messages", "/topics/orders/messages", {"body": {"order": 1}}),
        ("post", "/topics/{name}/groups/{group}/receive", "/topics/orders/groups/billing/receive",
         {}),
        ("post", "/topics/{name}/groups/{group}/receive", "/topics/orders/groups/none/receive",
         {}),
        ("get", "/topics/{name}", "/topics/orders", None),
    ]  # fmt: skip
    for method, template, path, body in steps:
        answer = await http.request(method, path, json=body)
        conforms(schema, answer, method, template)

    await http.post("/queues/emails/messages", json={"body": "welcome", "priority": 1})
    (got,) = (await http.post("/queues/emails/receive", json={})).json()["messages"]
    message = f"/queues/emails/messages/{got['id']}"
    receipt = {"receipt": got["receipt"]}
    settling = [
        ("/queues/{name}/messages/{message_id}/extend", "extend",
         {**receipt, "visibility_timeout_s": 60}),
        ("/queues/{name}/messages/{message_id}/nack", "nack", {**receipt, "delay_s": 60}),
        ("/queues/{name}/messages/{message_id}/ack", "ack", receipt),
        ("/queues/{name}/messages/{message_id}/extend", "extend",
         {**receipt, "visibility_timeout_s": 60}),
    ]  # fmt: skip
    for template, step, body in settling:
        conforms(schema, await http.post(f"{message}/{step}", json=body), "post", template)
    trace = await http.get(f"/messages/{got['id']}/trace")
    conforms(schema, trace, "get", "/messages/{message_id}/trace")
    assert [e["event"] for e in trace.json()["events"]] == [
        "published", "delivered", "extended", "nacked"
    ]  # fmt: skip


def test_every_example_is_valid_by_its_own_schema(schema: dict[str, Any]) -> None:
    """The examples Swagger UI shows and the fuzzer sends first are what the schema allows."""
    components = schema["components"]
    shown = 0
    for method, path, operation in operations(schema):
        named = set(re.findall(r"#/components/schemas/(\w+)", str(operation)))
        for name in named:
            for example in components["schemas"][name].get("examples", []):
                ref = {"$ref": f"#/components/schemas/{name}", "components": components}
                jsonschema_rs.validate(ref, example)
                shown += 1
        for parameter in operation.get("parameters", []):
            for example in parameter["schema"].get("examples", []):
                jsonschema_rs.validate(parameter["schema"], example)
                shown += 1
        assert named, (method, path)
    assert shown >= 40
