"""HTTP routes of the user service (the patterns post's /user/save and /user/read/<id>)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.dependencies import RedisDep
from app.schemas import Message
from app.users import service
from app.users.schemas import User, UserPk, UserPublic

router = APIRouter(prefix="/user", tags=["users"])


@router.post(
    "/save",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Message, "description": "The user name is taken"}},
)
async def save_user(body: User, store: RedisDep) -> UserPublic:
    """Validate and save a new user; answer with it and its primary key."""
    pk = await service.save_user(store=store, user=body)
    return UserPublic(pk=pk, **body.model_dump())


@router.get(
    "/read/{pk}", responses={404: {"model": Message, "description": "No user with this pk"}}
)
async def read_user(pk: UserPk, store: RedisDep) -> UserPublic:
    """Return the user with this primary key."""
    user = await service.read_user(store=store, pk=pk)
    return UserPublic(pk=pk, **user.model_dump())
