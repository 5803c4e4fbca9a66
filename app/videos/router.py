"""HTTP routes of the video example."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.dependencies import IdempotencyKeyDep, RedisDep
from app.messaging import BrokerDep
from app.schemas import Message
from app.videos import service
from app.videos.schemas import VideoCreate, VideoPublic

router = APIRouter(prefix="/videos", tags=["videos"])

VIDEO_ID_EXAMPLE = "a13efa0a-22ac-40db-bd1b-a18e28fb4c1f"
VideoId = Annotated[
    uuid.UUID,
    Path(description="The id creating the video answered", examples=[VIDEO_ID_EXAMPLE]),
]
LOCATION = {
    "description": "The video's path",
    "schema": {"type": "string", "examples": [f"/videos/{VIDEO_ID_EXAMPLE}"]},
}
CREATED_LINKS = {
    "ReadVideo": {
        "operationRef": "#/paths/~1videos~1{video_id}/get",
        "parameters": {"video_id": "$response.body#/id"},
        "description": "Read the video (its status moves to chunked)",
    },
    "ReadJobTrace": {
        "operationRef": "#/paths/~1messages~1{message_id}~1trace/get",
        "parameters": {"message_id": "$response.body#/job/id"},
        "description": "The chunking job's trace",
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Submit a video",
    responses={
        201: {
            "description": "The video, queued for chunking (or as it is now, for a retry "
            "carrying the same Idempotency-Key)",
            "headers": {"Location": LOCATION},
            "links": CREATED_LINKS,
        }
    },
)
async def create_video(
    video: VideoCreate, response: Response, broker: BrokerDep, idempotency_key: IdempotencyKeyDep
) -> VideoPublic:
    """Submit a video: its chunking job is queued by priority for the chunking workers."""
    created = await service.create_video(
        broker=broker, video=video, idempotency_key=idempotency_key
    )
    response.headers["Location"] = f"{router.prefix}/{created.id}"
    return created


@router.get(
    "/{video_id}",
    summary="Read a video",
    responses={404: {"model": Message, "description": "No video with that id"}},
)
async def read_video(video_id: VideoId, store: RedisDep) -> VideoPublic:
    """Return a video's status, its chunks once chunked, and its chunking job's trace link."""
    return await service.read_video(store=store, video_id=str(video_id))
