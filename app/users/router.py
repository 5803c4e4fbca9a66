"""HTTP routes of the user service (the patterns post's /user/save and /user/read/<id>)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.dependencies import RedisDep
from app.schemas import message_response
from app.users import service
from app.users.schemas import ANA_PK, User, UserPk, UserPublic

router = APIRouter(prefix="/user", tags=["users"])


@router.post(
    "/save",
    status_code=status.HTTP_201_CREATED,
    summary="Save a user",
    responses={
        201: {
            "description": "Saved: the user and its primary key",
            # The read of the user just saved: Swagger UI shows it, and a stateful test client
            # follows it.
            "links": {
                "ReadUser": {
                    "operationId": "read_user_user_read__pk__get",
                    "parameters": {"pk": "$response.body#/pk"},
                }
            },
        },
        409: message_response("The user name is taken", "A user with user_name 'Ana' exists"),
    },
)
async def save_user(body: User, store: RedisDep) -> UserPublic:
    """Validate and save a new user; answer with it and its primary key.

    User names are unique whatever their case: ``Ana`` is taken once ``ana`` is saved.
    """
    pk = await service.save_user(store=store, user=body)
    return UserPublic(pk=pk, **body.model_dump())


@router.get(
    "/read/{pk}",
    summary="Read a user",
    responses={404: message_response("No user with this pk", f"No user with pk {ANA_PK}")},
)
async def read_user(pk: UserPk, store: RedisDep) -> UserPublic:
    """Return the user with this primary key."""
    user = await service.read_user(store=store, pk=pk)
    return UserPublic(pk=pk, **user.model_dump())
