"""Request and response shapes of the profile service."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, RootModel, StrictStr
from pydantic.config import JsonDict

from app.profiles.keys import EVENTS_STREAM, PROFILE_PREFIX
from app.records.codec import STRING_VALUE_SCHEMA, check_fields, fields_schema

MAX_USER_LENGTH = 256
# The names whose keys are not profiles: profile:events and profile:events:<i> are the event
# streams (keys.event_stream).
RESERVED_USER_PATTERN = "^" + EVENTS_STREAM.removeprefix(PROFILE_PREFIX) + "(:[0-9]+)?$"
_RESERVED_USER = re.compile(RESERVED_USER_PATTERN)
# What a user name may hold: no control characters, no braces (they would change the hash slot
# of the profile's keys) and no '/' (a name is one path segment). The schema publishes this
# pattern and the validator matches the same one.
USER_PATTERN = "^[^\\x00-\\x1f\\x7f{}/]+$"
_USER = re.compile(USER_PATTERN)

ZACH: JsonDict = {"email": "zach@example.com", "username": "Zach"}


def _problem(user: str) -> str:
    if "{" in user or "}" in user:
        return "user name must not contain '{' or '}' (they would change its hash slot)"
    if "/" in user:
        return "user name must not contain '/' (it is one path segment)"
    return "user name must not contain control characters"


def _check_user(user: str) -> str:
    if _USER.fullmatch(user) is None:
        raise ValueError(_problem(user))
    if _RESERVED_USER.match(user):
        raise ValueError(
            f"user name {user!r} is reserved: {PROFILE_PREFIX}{user} is a profile event stream"
        )
    return user


UserName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_USER_LENGTH,
        description="The user's name: no control characters, braces or '/', and not 'events' "
        "or 'events:<number>' (the event streams' names)",
        examples=["zach"],
        json_schema_extra={"pattern": USER_PATTERN, "not": {"pattern": RESERVED_USER_PATTERN}},
    ),
    AfterValidator(_check_user),
]


def _check_fields(fields: dict[str, str]) -> dict[str, str]:
    check_fields(fields, kind="profile")
    return fields


class ProfileFields(RootModel[dict[StrictStr, StrictStr]]):
    """A profile: a flat JSON object of string fields, stored as the Redis hash profile:<user>
    (at least one field, at most 256; names of 1 to 256 characters; values of at most 65536)."""

    model_config = ConfigDict(
        json_schema_extra={**fields_schema(STRING_VALUE_SCHEMA), "examples": [ZACH]}
    )

    root: Annotated[dict[StrictStr, StrictStr], AfterValidator(_check_fields)]
