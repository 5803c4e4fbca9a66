"""Request and response shapes of the video example."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict

from app.records.codec import check_text, integral
from app.schemas import Schema

Status = Literal["queued", "chunking", "chunked"]
MAX_PRIORITY = 1000
MAX_DURATION_S = 24 * 3600
VIDEO_EXAMPLE: dict[str, Any] = {
    "id": "a13efa0a-22ac-40db-bd1b-a18e28fb4c1f",
    "title": "Launch keynote",
    "priority": 5,
    "duration_s": 95,
    "status": "chunked",
    "chunks": 10,
    "created_at": "2026-11-23T13:54:07.537000Z",
    "chunked_at": "2026-11-23T13:54:08.241000Z",
    "job": {
        "id": "01M84AYYHMJF0N94HW1PMXDMMP",
        "trace": "/messages/01M84AYYHMJF0N94HW1PMXDMMP/trace",
    },
}


class VideoCreate(Schema):
    """A video to process: its title, the job's priority (higher first), its length."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"title": "Launch keynote", "priority": 5, "duration_s": 95}]
        }
    )

    title: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
    priority: Annotated[
        int,
        Field(ge=0, le=MAX_PRIORITY, description="The chunking job's priority: higher first"),
        Strict(),
        BeforeValidator(integral),
    ] = 0
    duration_s: Annotated[
        int,
        Field(ge=1, le=MAX_DURATION_S, description="The video's length in seconds"),
        Strict(),
        BeforeValidator(integral),
    ] = 60


class ChunkingJob(Schema):
    """The video's chunking job: its message id and where its trace is."""

    id: str
    trace: Annotated[str, Field(description="The path of the job's trace (GET it)")]


class VideoPublic(Schema):
    """A video: what was submitted, where its chunking is, its chunks once chunked."""

    model_config = ConfigDict(json_schema_extra={"examples": [VIDEO_EXAMPLE]})

    id: str
    title: str
    priority: int
    duration_s: int
    status: Status
    chunks: Annotated[int | None, Field(description="How many chunks, once chunked")] = None
    created_at: datetime
    chunked_at: datetime | None = None
    job: ChunkingJob
