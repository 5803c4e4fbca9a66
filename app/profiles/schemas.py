"""Request and response shapes of the profile service."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, RootModel, StrictStr

from app.profiles.keys import EVENTS_STREAM, PROFILE_PREFIX
from app.records.codec import check_fields

MAX_USER_LENGTH = 256


def _check_user(user: str) -> str:
    if PROFILE_PREFIX + user == EVENTS_STREAM:
        raise ValueError(f"user name {user!r} is reserved: {EVENTS_STREAM} is the event stream")
    if "{" in user or "}" in user:
        raise ValueError("user name must not contain '{' or '}' (they would change its hash slot)")
    if any(ord(char) < 32 or ord(char) == 127 for char in user):
        raise ValueError("user name must not contain control characters")
    return user


UserName = Annotated[
    str, Field(min_length=1, max_length=MAX_USER_LENGTH), AfterValidator(_check_user)
]


def _check_fields(fields: dict[str, str]) -> dict[str, str]:
    check_fields(fields, kind="profile")
    return fields


class ProfileFields(RootModel[dict[StrictStr, StrictStr]]):
    """A profile: a flat JSON object of string fields, stored as the Redis hash profile:<user>."""

    root: Annotated[dict[StrictStr, StrictStr], AfterValidator(_check_fields)]
