"""HTTP routes of the profile service (the seeds' /profile/<user>).

They reach the Redis store and the stream writer through ``store_of(request)`` and
``streams_of(request)`` rather than dependencies: these are the benchmarked routes, and a nested
dependency resolution is a visible share of a read's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.dependencies import IdempotencyKeyDep, store_of, streams_of
from app.profiles import service
from app.profiles.schemas import ProfileFields, UserName
from app.schemas import Message

router = APIRouter(prefix="/profile", tags=["profiles"])

NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": Message, "description": "No profile for this user"}
}


@router.post(
    "/{user}",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Message, "description": "Profile exists"}},
)
async def create_profile(
    user: UserName,
    body: ProfileFields,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
) -> Message:
    """Create a user's profile from a flat JSON object of string fields."""
    await service.create_profile(
        store=store_of(request),
        streams=streams_of(request),
        user=user,
        fields=body.root,
        request_id=idempotency_key,
    )
    return Message(message=f"Profile created for: {user}")


@router.get("/{user}", responses=NOT_FOUND)
async def read_profile(user: UserName, request: Request) -> dict[str, str]:
    """Return a user's profile fields."""
    return await service.read_profile(
        store=store_of(request), streams=streams_of(request), user=user
    )


@router.delete("/{user}", responses=NOT_FOUND)
async def delete_profile(
    user: UserName, request: Request, idempotency_key: IdempotencyKeyDep
) -> Message:
    """Delete a user's profile."""
    await service.delete_profile(
        store=store_of(request),
        streams=streams_of(request),
        user=user,
        request_id=idempotency_key,
    )
    return Message(message=f"Profile deleted for {user}")
