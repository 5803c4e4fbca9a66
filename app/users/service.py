"""Users saved and read through the shared model layer (``app.records.model``)."""

from __future__ import annotations

from app.records.model import read_record, save_record
from app.redis import RedisStore
from app.users import metrics
from app.users.schemas import User


async def save_user(*, store: RedisStore, user: User) -> str:
    """Store a new user and return its pk; raise UniqueValueTaken if its name is taken."""
    pk = await save_record(store, user)
    metrics.CREATED.inc()
    return pk


async def read_user(*, store: RedisStore, pk: str) -> User:
    """Return the user with primary key ``pk``; raise RecordNotFound."""
    return await read_record(store, User, pk)
