"""HTTP routes of the reporting service (the seeds' /reporting/profileStats/<n>)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from app.dependencies import RedisDep
from app.reporting import service
from app.reporting.schemas import ProfileStats

MAX_TOP = 1000

router = APIRouter(prefix="/reporting", tags=["reporting"])


@router.get("/profileStats/{n}", summary="Most-read profiles")
async def read_profile_stats(
    n: Annotated[
        int, Path(gt=0, le=MAX_TOP, description="How many profiles to return", examples=[3])
    ],
    store: RedisDep,
    request: Request,
) -> ProfileStats:
    """Return the n most-read profiles, highest read count first.

    Counts come from the profile events, so a read shows here a moment after it is answered;
    deleted profiles are left out.
    """
    top = await service.top_profiles(store=store, n=n, streams=request.state.reporting)
    return ProfileStats(results=top)
