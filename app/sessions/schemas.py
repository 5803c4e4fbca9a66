"""Request and response shapes of the session pages and their JSON view."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, RootModel

from app.records.codec import MAX_VALUE_LENGTH, check_name, check_text, dump_json
from app.schemas import Schema
from app.sessions.service import USER_NAME

MAX_USER_NAME_LENGTH = 256
MAX_KEYS_PER_UPDATE = 64


def check_user_name(user_name: str) -> str:
    """Return a user name fit to be saved in a session, stripped; else raise ValueError."""
    stripped = check_text(user_name).strip()
    if not stripped:
        raise ValueError("a user name needs at least one visible character")
    if any(ord(char) < 32 or ord(char) == 127 for char in stripped):
        raise ValueError("a user name must not contain control characters")
    return stripped


def _check_update(values: dict[str, Any]) -> dict[str, Any]:
    if not values:
        raise ValueError("name at least one session key to set (or null to remove)")
    if len(values) > MAX_KEYS_PER_UPDATE:
        raise ValueError(f"at most {MAX_KEYS_PER_UPDATE} keys per update, got {len(values)}")
    for name, value in values.items():
        check_name(name, what="session keys")
        if name == USER_NAME:
            raise ValueError(f"'{USER_NAME}' is saved by POST /session/save (a login)")
        try:
            encoded = dump_json(value)
        except ValueError as exc:
            raise ValueError(f"key {name!r}: {exc}") from None
        if len(encoded) > MAX_VALUE_LENGTH:
            raise ValueError(f"key {name!r}: value longer than {MAX_VALUE_LENGTH} characters")
    return values


# Session values are any JSON their owner writes (``Any``): the schema checks keys and sizes,
# the shape is the owner's.
class SessionUpdate(RootModel[dict[str, Any]]):
    """Session keys to set, with any JSON value; null removes a key."""

    root: Annotated[dict[str, Any], AfterValidator(_check_update)]


class SessionData(Schema):
    """What the session holds, and the token its writes must carry (header X-CSRF-Token)."""

    data: dict[str, Any]
    csrf_token: str


class SessionSummary(Schema):
    """One of the user's sessions; ``id`` is a fingerprint, never the session id itself."""

    id: str
    created_at_ms: int
    last_seen_at_ms: int
    expires_at_ms: int
    current: bool


class UserSessions(Schema):
    user_name: str
    sessions: list[SessionSummary]
