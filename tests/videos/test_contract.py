"""The video operations' OpenAPI contract, against the real cluster: a boolean or a string is
no number (the fuzzer's ``"priority": false`` was stored as priority 0), a whole ``5.0`` is an
integer, and a created video links to its reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.main import create_app
from tests.conftest import data_keys, running_app, with_workers


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its chunking workers, so a video stays queued."""
    async with running_app(with_workers(settings, enabled=False)) as (client, _):
        yield client


@pytest.mark.parametrize(
    ("video", "named"),
    [
        ({"title": "x", "priority": False}, "priority"),
        ({"title": "x", "priority": True}, "priority"),
        ({"title": "x", "priority": "5"}, "priority"),
        ({"title": "x", "priority": 2.5}, "priority"),
        ({"title": "x", "duration_s": True}, "duration_s"),
        ({"title": "x", "duration_s": "95"}, "duration_s"),
        ({"title": 7}, "title"),
    ],
)
async def test_a_boolean_or_string_is_no_number_and_queues_nothing(
    http: httpx.AsyncClient, redis: RedisCluster, video: dict[str, Any], named: str
) -> None:
    answer = await http.post("/videos", json=video)
    assert answer.status_code == 422
    assert named in answer.json()["message"]
    assert await data_keys(redis) == set(), "no video, no chunking job, no queue"


async def test_a_whole_number_written_with_a_fraction_is_an_integer(settings: Settings) -> None:
    async with running_app(with_workers(settings, enabled=False)) as (http, state):
        created = await http.post(
            "/videos", json={"title": "Launch keynote", "priority": 5.0, "duration_s": 95.0}
        )
        assert created.status_code == 201, created.text
        assert (created.json()["priority"], created.json()["duration_s"]) == (5, 95)
        # The trace route is the messaging service's: read it as the video service can.
        trace = await state["broker"].trace(created.json()["job"]["id"])
    assert trace.events[0].priority == 5


def test_a_created_video_links_to_its_reads_and_its_examples_hold() -> None:
    schema = create_app().openapi()
    created = schema["paths"]["/videos"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    links = created["links"]
    assert links["ReadVideo"]["operationRef"] == "#/paths/~1videos~1{video_id}/get"
    assert links["ReadVideo"]["parameters"] == {"video_id": "$response.body#/id"}
    assert links["ReadJobTrace"]["parameters"] == {"message_id": "$response.body#/job/id"}
    for path, method in [("/videos", "post"), ("/videos/{video_id}", "get")]:
        assert schema["paths"][path][method]["summary"]
        assert schema["paths"][path][method]["description"]
    components = schema["components"]
    for name in ("VideoCreate", "VideoPublic"):
        (example,) = components["schemas"][name]["examples"]
        jsonschema_rs.validate({"$ref": f"#/components/schemas/{name}", "components": components},
                               example)  # fmt: skip
    body = components["schemas"]["VideoCreate"]
    assert body["additionalProperties"] is False
    assert body["properties"]["priority"] | {"description": None} == {
        "type": "integer", "minimum": 0, "maximum": 1000, "default": 0, "title": "Priority",
        "description": None,
    }  # fmt: skip
