"""Request and response shapes of the video example."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from app.records.codec import check_text
from app.schemas import Schema

Status = Literal["queued", "chunking", "chunked"]


class VideoCreate(Schema):
    """A video to process: its title, the job's priority (higher first), its length."""

    title: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    duration_s: Annotated[int, Field(ge=1, le=24 * 3600)] = 60


class ChunkingJob(Schema):
    id: str
    trace: str


class VideoPublic(Schema):
    id: str
    title: str
    priority: int
    duration_s: int
    status: Status
    chunks: int | None = None
    created_at: datetime
    chunked_at: datetime | None = None
    job: ChunkingJob
