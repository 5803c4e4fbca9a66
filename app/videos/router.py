"""HTTP routes of the video example."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.dependencies import IdempotencyKeyDep, RedisDep
from app.messaging import BrokerDep
from app.schemas import Message
from app.videos import service
from app.videos.schemas import VideoCreate, VideoPublic

router = APIRouter(prefix="/videos", tags=["videos"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_video(
    video: VideoCreate, response: Response, broker: BrokerDep, idempotency_key: IdempotencyKeyDep
) -> VideoPublic:
    """Submit a video: its chunking job is queued by priority for the chunking workers."""
    created = await service.create_video(
        broker=broker, video=video, idempotency_key=idempotency_key
    )
    response.headers["Location"] = f"{router.prefix}/{created.id}"
    return created


@router.get("/{video_id}", responses={404: {"model": Message}})
async def read_video(video_id: uuid.UUID, store: RedisDep) -> VideoPublic:
    """Return a video's status, its chunks once chunked, and its chunking job's trace link."""
    return await service.read_video(store=store, video_id=str(video_id))
