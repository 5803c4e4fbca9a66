"""The media example: a video API that hands chunking to a worker through a priority queue.

``POST /videos`` publishes a chunking job on the priority queue ``video-chunking`` and records
the video as queued; a chunking worker (``app.videos.chunker``) leases the job, marks the
video chunking, cuts it into chunks and marks it chunked, then acknowledges the job. The job is
published before the record is written, and both the API and the worker fill in the record's
description when it is missing, so a crash between the two steps leaves a job whose video still
appears (the worker writes it), never a queued video without a job. The record only moves
forward (``update_video.lua``), so a redelivered job after a worker's crash changes nothing it
should not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path

from app.messaging import (
    Broker,
    Delivery,
    MessagePublish,
    Queue,
    QueueCreate,
    QueueNotFound,
    from_ms,
)
from app.records.codec import JSON
from app.records.ids import request_uuid
from app.redis import RedisStore
from app.scripting import LuaScript, outcome_of
from app.videos import keys
from app.videos.exceptions import VideoNotFound
from app.videos.schemas import ChunkingJob, Status, VideoCreate, VideoPublic

UPDATE_VIDEO = LuaScript.load(Path(__file__).with_name("update_video.lua"))
# The queue is created with these when missing; an operator's later PUT /queues/... wins.
CHUNKING_QUEUE_SETTINGS = QueueCreate(kind="priority", visibility_timeout_s=30, max_deliveries=5)


class MoveOutcome(IntEnum):
    """What ``update_video.lua`` did; neither outcome is a failure, so no error table maps them."""

    # The record was already at or past the status: a redelivered job after a crash, or the
    # API writing "queued" after the worker has begun.
    ALREADY_THERE = 0
    MOVED = 1


async def ensure_chunking_queue(broker: Broker) -> Queue:
    """Return the chunking queue, creating it when it does not exist."""
    queue = broker.queue(keys.CHUNKING_QUEUE)
    try:
        await queue.info()
    except QueueNotFound:
        await queue.create(CHUNKING_QUEUE_SETTINGS)
    return queue


async def _move(
    store: RedisStore, video_id: str, status: Status, fill: dict[str, str], then: dict[str, str]
) -> MoveOutcome:
    args = [status, str(len(fill))]
    for pairs in (fill, then):
        for name, value in pairs.items():
            args += [name, value]
    reply = await UPDATE_VIDEO(
        store, keys=[keys.video_key(video_id)], args=args, what=f"mark video {status}"
    )
    return outcome_of(MoveOutcome, reply)


def _description(job: Mapping[str, JSON], job_id: str) -> dict[str, str]:
    return {
        "title": str(job["title"]),
        "priority": str(int(job["priority"])),
        "duration_s": str(int(job["duration_s"])),
        "created_at": str(int(job["created_at"])),
        "job_id": job_id,
    }


async def create_video(
    *, broker: Broker, video: VideoCreate, idempotency_key: str | None = None
) -> VideoPublic:
    """Publish the video's chunking job, record the video as queued, and return it."""
    video_id = request_uuid("video", idempotency_key)
    job = {
        "video_id": video_id,
        "title": video.title,
        "priority": video.priority,
        "duration_s": video.duration_s,
        "created_at": time.time_ns() // 1_000_000,
    }
    message = MessagePublish(body=job, priority=video.priority, dedupe_id=f"video:{video_id}")
    try:
        published = await broker.queue(keys.CHUNKING_QUEUE).publish(message)
    except QueueNotFound:
        # The first video (or a Redis that lost its data): the queue is created on first use,
        # so an idle service writes nothing.
        published = await (await ensure_chunking_queue(broker)).publish(message)
    await _move(broker.store, video_id, "queued", _description(job, published.id), {})
    return await read_video(store=broker.store, video_id=video_id)


async def read_video(*, store: RedisStore, video_id: str) -> VideoPublic:
    """Return a video's record; raise VideoNotFound."""
    key = keys.video_key(video_id)
    found: dict[str, str] = await store.call(key, "HGETALL", key, what="read video")
    if not found:
        raise VideoNotFound(video_id)
    return VideoPublic(
        id=video_id,
        title=found["title"],
        priority=int(found["priority"]),
        duration_s=int(found["duration_s"]),
        status=found["status"],
        chunks=int(found["chunks"]) if "chunks" in found else None,
        created_at=from_ms(found["created_at"]),
        chunked_at=from_ms(found["chunked_at"]) if "chunked_at" in found else None,
        job=ChunkingJob(id=found["job_id"], trace=f"/messages/{found['job_id']}/trace"),
    )


async def chunk_video(*, store: RedisStore, job: Delivery, chunk_duration_s: int) -> int:
    """Process one chunking job: mark the video chunking, cut it, mark it chunked.

    Returns the number of chunks. Safe to run again for the same job (a redelivery).
    Raises KeyError, TypeError or ValueError for a malformed job, which the worker gives back
    until it is dead-lettered.
    """
    body = job.body
    video_id = str(body["video_id"])
    description = _description(body, job.id)
    await _move(store, video_id, "chunking", description, {})
    chunks = math.ceil(int(body["duration_s"]) / chunk_duration_s)
    await _move(
        store,
        video_id,
        "chunked",
        description,
        {"chunks": str(chunks), "chunked_at": str(time.time_ns() // 1_000_000)},
    )
    return chunks
