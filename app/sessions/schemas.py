"""Request and response shapes of the session pages and their JSON view.

Where a check gives a clearer message than a schema constraint would (a user name's characters,
an update's keys), the check runs in a validator and the JSON schema states the same rule as a
pattern or keyword; ``tests/sessions`` checks that both accept exactly the same input.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, RootModel

from app.records.codec import (
    MAX_FIELD_NAME_LENGTH,
    MAX_JSON_DEPTH,
    MAX_VALUE_LENGTH,
    check_name,
    check_text,
    dump_json,
)
from app.schemas import Schema
from app.sessions.service import USER_NAME
from app.sessions.tokens import B64_256_TEXT, FINGERPRINT_LENGTH, TOKEN_LENGTH

MAX_USER_NAME_LENGTH = 256
MAX_KEYS_PER_UPDATE = 64
# What a client may send as a CSRF token: anything up to this long is read (and a wrong one is
# 403); the tokens the service gives out match CSRF_TOKEN_PATTERN.
MAX_CSRF_TOKEN_LENGTH = 128
CSRF_TOKEN_PATTERN = f"^{B64_256_TEXT}$"
EXAMPLE_CSRF = "Kp2sQ0v9yJ1mX3rT8cLw4hZb6nFe5aUd7gYi0oRjS1k"

# The characters str.strip() removes (Python's whitespace), and the control characters a user
# name must not hold, as regex class bodies that Rust's regex, Python's re and ECMAScript read
# alike (\uXXXX escapes, no lookarounds).
_SPACE = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
    r"\u3000"
)
_CONTROL = r"\u0000-\u001f\u007f"
# A character that may begin or end a user name (not whitespace, not a control character), and
# one that may stand inside it (not a control character).
_EDGE = r"[^\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_INNER = f"[^{_CONTROL}]"
# Exactly what check_user_name accepts: surrounding whitespace (removed when saved) around at
# least one visible character, and no control character between the first and last visible ones.
USER_NAME_PATTERN = f"^[{_SPACE}]*{_EDGE}(?:{_INNER}*{_EDGE})?[{_SPACE}]*$"


def check_user_name(user_name: str) -> str:
    """Return a user name fit to be saved in a session, stripped; else raise ValueError."""
    stripped = check_text(user_name).strip()
    if not stripped:
        raise ValueError("a user name needs at least one visible character")
    if any(ord(char) < 32 or ord(char) == 127 for char in stripped):
        raise ValueError("a user name must not contain control characters")
    return stripped


CsrfToken = Annotated[
    str,
    Field(
        max_length=MAX_CSRF_TOKEN_LENGTH,
        description="The session's CSRF token: the page's hidden field, or `csrf_token` of "
        "GET /session/data. A missing or wrong one is refused with 403.",
    ),
]


class SaveForm(Schema):
    """The form of /session/save."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user_name": "ana", "csrf_token": EXAMPLE_CSRF}]}
    )

    user_name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_USER_NAME_LENGTH,
            description="The name to save (a login). At least one visible character, no "
            "control characters; surrounding whitespace is removed.",
            json_schema_extra={"pattern": USER_NAME_PATTERN},
            examples=["ana"],
        ),
        AfterValidator(check_user_name),
    ]
    csrf_token: CsrfToken = ""


class CsrfForm(Schema):
    """A form that carries only the session's CSRF token (the logout buttons)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"csrf_token": EXAMPLE_CSRF}]})

    csrf_token: CsrfToken = ""


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

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Session keys to set, with any JSON value; null removes a key. "
            f"A value nests at most {MAX_JSON_DEPTH} arrays or objects deep and takes at most "
            f"{MAX_VALUE_LENGTH} characters as compact JSON (rules a JSON schema cannot state: "
            "a value breaking them is refused with 422).",
            "minProperties": 1,
            "maxProperties": MAX_KEYS_PER_UPDATE,
            "propertyNames": {
                "minLength": 1,
                "maxLength": MAX_FIELD_NAME_LENGTH,
                "not": {"const": USER_NAME},
            },
            "examples": [{"theme": "dark", "cart": [{"sku": "A-1", "qty": 2}]}],
        }
    )

    root: Annotated[dict[str, Any], AfterValidator(_check_update)]


CsrfTokenOut = Annotated[
    str,
    Field(
        pattern=CSRF_TOKEN_PATTERN,
        min_length=TOKEN_LENGTH,
        max_length=TOKEN_LENGTH,
        description="The token the session's writes must carry (header X-CSRF-Token, or the "
        "forms' csrf_token field); it changes at every login.",
    ),
]


class SessionData(Schema):
    """What the session holds, and the token its writes must carry (header X-CSRF-Token)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": {"user_name": "ana", "theme": "dark"},
                    "csrf_token": EXAMPLE_CSRF,
                }
            ]
        }
    )

    data: dict[str, Any] = Field(
        description="The session's keys and their JSON values; `user_name` once a name is saved."
    )
    csrf_token: CsrfTokenOut


class SessionSummary(Schema):
    """One of the user's sessions; ``id`` is a fingerprint, never the session id itself."""

    id: Annotated[
        str,
        Field(
            pattern=f"^[0-9a-f]{{{FINGERPRINT_LENGTH}}}$",
            description="A fingerprint of the session (the session id is a secret).",
        ),
    ]
    created_at_ms: Annotated[int, Field(ge=0, description="When it began (Unix ms).")]
    last_seen_at_ms: Annotated[int, Field(ge=0, description="When it was last used (Unix ms).")]
    expires_at_ms: Annotated[int, Field(ge=0, description="When it expires unused (Unix ms).")]
    current: bool = Field(description="Whether it is the session of this request.")


class UserSessions(Schema):
    """The live sessions of the session's user, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_name": "ana",
                    "sessions": [
                        {
                            "id": "3f9c2a7b1d04e6a8",
                            "created_at_ms": 1795441439971,
                            "last_seen_at_ms": 1795441440012,
                            "expires_at_ms": 1796046240012,
                            "current": True,
                        }
                    ],
                }
            ]
        }
    )

    user_name: str = Field(description="The user name saved in this session.")
    sessions: list[SessionSummary]
