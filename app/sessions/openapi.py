"""What the session operations' OpenAPI answers declare beyond their models: the session
cookie, the links that carry it (and the CSRF token) from one answer to the next request, the
redirects of the forms, and the pages' errors as JSON.

A session is the cookie the service sets: every operation reads it, and a client (or the
fuzzer's stateful phase) following the links works on one session.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import SessionSettings
from app.schemas import COMMON_RESPONSES, Message

# The schema names the cookie as the default settings do (``sessions.cookie_name`` renames it).
COOKIE_NAME = SessionSettings().cookie_name
SESSION_COOKIE: dict[str, Any] = {
    "parameters": [
        {
            "name": COOKIE_NAME,
            "in": "cookie",
            "required": False,
            "schema": {"type": "string"},
            "description": "The session cookie a previous answer set (its name is the setting "
            "sessions.cookie_name). Without it, or with one that is altered, expired or of an "
            "ended session, the request gets a new empty session and its answer a new cookie.",
        }
    ]
}
SET_COOKIE_HEADER = {
    "description": "The session cookie (HttpOnly, SameSite=Lax): a new session's id, or empty "
    "to clear it after a logout",
    "schema": {"type": "string"},
}

# What the links carry into the next request: the session cookie this answer set, and the
# session's CSRF token from GET /session/data's answer.
CARRY_COOKIE = {
    f"cookie.{COOKIE_NAME}": f"$response.header.Set-Cookie#regex:^{COOKIE_NAME}=([^;]+)"
}
BODY_CSRF = "$response.body#/csrf_token"


def _link(path: str, method: str, description: str, **fields: Any) -> dict[str, Any]:
    # operationRef names the target by path and method, which stay when operation ids change.
    reference = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method
    return {"operationRef": reference, "description": description, **fields}


def follow_session(*, with_token: bool) -> dict[str, dict[str, Any]]:
    """Return links that carry the answer's session cookie on: to the reads, and with the
    answer's CSRF token (``with_token``) to the writes."""
    links = {
        "ReadSessionData": _link(
            "/session/data", "get", "Read the same session", parameters=CARRY_COOKIE
        ),
        "ListUserSessions": _link(
            "/session/all", "get", "List the sessions of its user", parameters=CARRY_COOKIE
        ),
    }
    if not with_token:
        return links
    form = {"parameters": CARRY_COOKIE, "requestBody": {"csrf_token": BODY_CSRF}}
    return {
        **links,
        "UpdateSessionData": _link(
            "/session/data",
            "patch",
            "Write to the same session",
            parameters={**CARRY_COOKIE, "header.x-csrf-token": BODY_CSRF},
        ),
        "SaveUserName": _link("/session/save", "post", "Log in the same session", **form),
        "LogOut": _link("/session/logout", "post", "End the same session", **form),
        "LogOutEverywhere": _link(
            "/session/logout-everywhere", "post", "End every session of its user", **form
        ),
    }


def _json_error(response: Mapping[str, object]) -> dict[str, Any]:
    """Return an error answer declared as JSON: a page's errors are JSON, not HTML (FastAPI
    would give a ``model`` the page's media type)."""
    model = response["model"]
    name = model.__name__ if isinstance(model, type) else str(model)
    return {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


PAGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The page (HTML)",
        "content": {
            "text/html": {
                "example": '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
                "<title>Session</title></head>\n<body>\n  <h1>Save your name in the session"
                "</h1>\n  ...\n</body>\n</html>"
            }
        },
    },
    **{code: _json_error(response) for code, response in COMMON_RESPONSES.items()},
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Message, "description": "Missing or wrong CSRF token: nothing changed"}
}


def see_session(description: str, links: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the 303 answer of a form: see /session, with the session's new cookie."""
    return {
        "description": description,
        "headers": {
            "Location": {
                "description": "The session page, /session",
                "required": True,
                "schema": {"type": "string"},
            },
            "Set-Cookie": {**SET_COOKIE_HEADER, "required": True},
        },
        **({"links": links} if links else {}),
    }


SESSION_DATA_ANSWER = {
    "headers": {"Set-Cookie": SET_COOKIE_HEADER},
    "links": follow_session(with_token=True),
}
