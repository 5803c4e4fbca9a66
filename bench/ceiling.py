"""The ceiling: FastAPI routes shaped like the profile routes that touch no Redis.

It gets the same process tuning as the service (app.runtime), so the ratio measures what
Redis costs, not what the tuning buys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, status

from app.profiles.schemas import ProfileFields, UserName
from app.runtime import tune_garbage_collector
from app.schemas import Message


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    tune_garbage_collector()
    yield


app = FastAPI(lifespan=lifespan)

PROFILE = {"email": "user@example.com", "username": "User"}


@app.get("/profile/{user}")
async def read_profile(user: UserName) -> dict[str, str]:
    """Answer like a profile read, from memory."""
    return PROFILE


@app.post("/profile/{user}", status_code=status.HTTP_201_CREATED)
async def create_profile(user: UserName, body: ProfileFields) -> Message:
    """Validate like a profile create, store nothing."""
    return Message(message=f"Profile created for: {user}")
