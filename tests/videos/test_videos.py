"""The media example end to end: the video API, the priority queue, the chunking worker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.config import Settings
from app.messaging.schemas import MessagePublish, QueueCreate
from tests.conftest import eventually, running_app, with_workers


async def video_status(http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    answer = await http.get(f"/videos/{video_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def test_a_video_is_chunked_by_the_worker_with_a_full_trace(settings: Settings) -> None:
    async with running_app(settings) as (client, state):
        created = await client.post(
            "/videos", json={"title": "Launch keynote", "priority": 5, "duration_s": 95}
        )
        assert created.status_code == 201, created.text
        video = created.json()
        assert video["title"] == "Launch keynote"
        assert video["status"] in {"queued", "chunking", "chunked"}
        assert created.headers["location"] == f"/videos/{video['id']}"
        job_id = video["job"]["id"]
        # Served by the messaging service; this process runs videos alone, so the test reads
        # the trace through the video service's own broker (and its ACL user).
        assert video["job"]["trace"] == f"/messages/{job_id}/trace"

        async def chunked() -> bool:
            return bool((await video_status(client, video["id"]))["status"] == "chunked")

        await eventually(chunked, within_s=10, what="the chunking worker")
        done = await video_status(client, video["id"])

        async def acked() -> bool:
            # The worker acknowledges the job just after the video is marked chunked.
            events = (await state["broker"].trace(job_id)).events
            return events[-1].event == "acked"

        await eventually(acked, within_s=10, what="the job's ack")
        trace = await state["broker"].trace(job_id)
    assert done["chunks"] == 10, "95 s in 10 s chunks"
    assert done["chunked_at"] >= done["created_at"]
    assert [e.event for e in trace.events] == ["published", "delivered", "acked"]
    assert trace.events[0].queue == "video-chunking"
    assert trace.events[0].priority == 5
    assert str(trace.events[1].consumer).endswith("-chunker-0")


@pytest.fixture
def no_chunkers(settings: Settings) -> Settings:
    return with_workers(settings, enabled=False)


async def test_higher_priority_videos_are_chunked_first(no_chunkers: Settings) -> None:
    async with running_app(no_chunkers) as (http, state):
        titles = {}
        for title, priority in [("low", 0), ("urgent", 9), ("normal", 3)]:
            created = await http.post("/videos", json={"title": title, "priority": priority})
            titles[created.json()["job"]["id"]] = title
        queue = state["broker"].queue("video-chunking")
        got = await queue.receive(consumer="test", limit=3)
        assert [titles[d.id] for d in got] == ["urgent", "normal", "low"]


async def test_a_malformed_job_is_retried_then_dead_lettered(settings: Settings) -> None:
    async with running_app(settings) as (_client, state):
        queue = state["broker"].queue("video-chunking")
        await queue.create(QueueCreate(kind="priority", visibility_timeout_s=30, max_deliveries=2))
        await queue.publish(MessagePublish(body={"not": "a job"}))

        async def dead() -> bool:
            return (await queue.info()).counts.dead_lettered == 1

        await eventually(dead, within_s=10, what="the poison job to be dead-lettered")
        (letter,), _total = await queue.dead_letters()
    assert letter.body == {"not": "a job"}
    assert letter.reason == "nacked on delivery 2 of 2"


async def test_same_idempotency_key_submits_one_video(no_chunkers: Settings) -> None:
    async with running_app(no_chunkers) as (http, state):
        headers = {"Idempotency-Key": "upload-77"}
        first = await http.post("/videos", json={"title": "a"}, headers=headers)
        again = await http.post("/videos", json={"title": "a"}, headers=headers)
        assert first.json()["id"] == again.json()["id"]
        assert first.json()["job"]["id"] == again.json()["job"]["id"]
        info = await state["broker"].queue("video-chunking").info()
        assert info.counts.ready == 1


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
