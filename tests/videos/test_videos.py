"""The media example end to end: the video API, the priority queue, the chunking worker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.config import Settings
from app.local_cluster import LocalCluster
from tests.conftest import eventually, make_settings, running_app


async def video_status(http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    answer = await http.get(f"/videos/{video_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def test_a_video_is_chunked_by_the_worker_with_a_full_trace(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/videos", json={"title": "Launch keynote", "priority": 5, "duration_s": 95}
    )
    assert created.status_code == 201, created.text
    video = created.json()
    assert video["title"] == "Launch keynote"
    assert video["status"] in {"queued", "chunking", "chunked"}
    assert created.headers["location"] == f"/videos/{video['id']}"
    job_id = video["job"]["id"]
    assert video["job"]["trace"] == f"/messages/{job_id}/trace"

    async def chunked() -> bool:
        return bool((await video_status(client, video["id"]))["status"] == "chunked")

    await eventually(chunked, within_s=10, what="the chunking worker")
    done = await video_status(client, video["id"])
    assert done["chunks"] == 10, "95 s in 10 s chunks"
    assert done["chunked_at"] >= done["created_at"]
    trace = (await client.get(video["job"]["trace"])).json()
    assert [e["event"] for e in trace["events"]] == ["published", "delivered", "acked"]
    assert trace["events"][0]["queue"] == "video-chunking"
    assert trace["events"][0]["priority"] == 5
    assert trace["events"][1]["consumer"].endswith("-chunker-0")


@pytest.fixture
def no_chunkers(cluster: LocalCluster) -> Settings:
    return make_settings(cluster.url, enabled=False)


async def test_higher_priority_videos_are_chunked_first(no_chunkers: Settings) -> None:
    async with running_app(no_chunkers) as (http, state):
        titles = {}
        for title, priority in [("low", 0), ("urgent", 9), ("normal", 3)]:
            created = await http.post("/videos", json={"title": title, "priority": priority})
            titles[created.json()["job"]["id"]] = title
        queue = state["broker"].queue("video-chunking")
        got = await queue.receive(consumer="test", limit=3)
        assert [titles[d.id] for d in got] == ["urgent", "normal", "low"]


async def test_a_malformed_job_is_retried_then_dead_lettered(client: httpx.AsyncClient) -> None:
    await client.put(
        "/queues/video-chunking",
        json={"kind": "priority", "visibility_timeout_s": 30, "max_deliveries": 2},
    )
    published = await client.post(
        "/queues/video-chunking/messages", json={"body": {"not": "a job"}}
    )
    assert published.status_code == 201

    async def dead() -> bool:
        info = (await client.get("/queues/video-chunking")).json()
        return bool(info["counts"]["dead_lettered"] == 1)

    await eventually(dead, within_s=10, what="the poison job to be dead-lettered")
    letter = (await client.get("/queues/video-chunking/dead-letters")).json()["dead_letters"][0]
    assert letter["body"] == {"not": "a job"}
    assert letter["reason"] == "nacked on delivery 2 of 2"


async def test_same_idempotency_key_submits_one_video(no_chunkers: Settings) -> None:
    async with running_app(no_chunkers) as (http, _state):
        headers = {"Idempotency-Key": "upload-77"}
        first = await http.post("/videos", json={"title": "a"}, headers=headers)
        again = await http.post("/videos", json={"title": "a"}, headers=headers)
        assert first.json()["id"] == again.json()["id"]
        assert first.json()["job"]["id"] == again.json()["job"]["id"]
        counts = (await http.get("/queues/video-chunking")).json()["counts"]
        assert counts["ready"] == 1


@pytest.mark.parametrize(
    ("video", "named"),
    [({}, "title"), ({"title": ""}, "title"), ({"title": "x", "priority": -1}, "priority")],
)
async def test_bad_videos_are_422(
    client: httpx.AsyncClient, video: dict[str, Any], named: str
) -> None:
    answer = await client.post("/videos", json=video)
    assert answer.status_code == 422
    assert named in answer.json()["message"]


async def test_unknown_video_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/videos/8c1b6f5e-3d43-4a5c-9f4e-2b0c9d7a1e11")
    assert answer.status_code == 404
    assert (await client.get("/videos/not-a-uuid")).status_code == 422
