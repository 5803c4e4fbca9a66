"""HTTP routes of the profile service (the seeds' /profile/<user>).

They reach the Redis store and the stream writer through ``store_of(request)`` and
``streams_of(request)`` rather than dependencies: these are the benchmarked routes, and a nested
dependency resolution is a visible share of a read's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.dependencies import IdempotencyKeyDep, store_of, streams_of
from app.profiles import service
from app.profiles.schemas import ZACH, ProfileFields, UserName
from app.schemas import Message, Responses, message_response

router = APIRouter(prefix="/profile", tags=["profiles"])


NOT_FOUND: Responses = {
    404: message_response("No profile for this user", "Profile not found for zach")
}
# The operations on the profile a create made: Swagger UI shows them, and a stateful test
# client follows them.
CREATED_LINKS = {
    "ReadProfile": {
        "operationId": "read_profile_profile__user__get",
        "parameters": {"user": "$request.path.user"},
    },
    "DeleteProfile": {
        "operationId": "delete_profile_profile__user__delete",
        "parameters": {"user": "$request.path.user"},
    },
}


@router.post(
    "/{user}",
    status_code=status.HTTP_201_CREATED,
    summary="Create a profile",
    responses={
        201: {
            "description": "Created",
            "content": {"application/json": {"example": {"message": "Profile created for: zach"}}},
            "links": CREATED_LINKS,
        },
        409: message_response(
            "The user has a profile, or this Idempotency-Key's profile has been deleted since",
            "Profile exists",
        ),
    },
)
async def create_profile(
    user: UserName,
    body: ProfileFields,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
) -> Message:
    """Create a user's profile from a flat JSON object of string fields.

    A retry with the same Idempotency-Key is answered as the first attempt was, unless its
    profile has been deleted since (409).
    """
    await service.create_profile(
        store=store_of(request),
        streams=streams_of(request),
        user=user,
        fields=body.root,
        request_id=idempotency_key,
        config=request.state.profiles,
    )
    return Message(message=f"Profile created for: {user}")


@router.get(
    "/{user}",
    summary="Read a profile",
    responses={
        200: {
            "description": "The profile's fields",
            "content": {"application/json": {"example": ZACH}},
        },
        **NOT_FOUND,
    },
)
async def read_profile(user: UserName, request: Request) -> dict[str, str]:
    """Return a user's profile fields; the read counts in the report."""
    return await service.read_profile(
        store=store_of(request),
        streams=streams_of(request),
        user=user,
        config=request.state.profiles,
    )


@router.delete(
    "/{user}",
    summary="Delete a profile",
    responses={
        200: {
            "description": "Deleted",
            "content": {"application/json": {"example": {"message": "Profile deleted for zach"}}},
        },
        **NOT_FOUND,
        409: message_response(
            "This Idempotency-Key deleted the user's profile, and the user has a profile again",
            "This Idempotency-Key deleted the profile of zach, who has a profile again since",
        ),
    },
)
async def delete_profile(
    user: UserName, request: Request, idempotency_key: IdempotencyKeyDep
) -> Message:
    """Delete a user's profile.

    A retry with the same Idempotency-Key is answered as the first attempt was, unless the user
    has a profile again since (409: the retry never deletes it).
    """
    await service.delete_profile(
        store=store_of(request),
        streams=streams_of(request),
        user=user,
        request_id=idempotency_key,
        config=request.state.profiles,
    )
    return Message(message=f"Profile deleted for {user}")
