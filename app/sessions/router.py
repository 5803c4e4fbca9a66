"""The session pages (the patterns post's /session/save form) and their JSON view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import AfterValidator

from app.errors import Forbidden, Unauthorized
from app.schemas import Message
from app.sessions.dependencies import SessionDep
from app.sessions.schemas import (
    MAX_USER_NAME_LENGTH,
    SessionData,
    SessionSummary,
    SessionUpdate,
    UserSessions,
    check_user_name,
)
from app.sessions.service import USER_NAME, Session

router = APIRouter(prefix="/session", tags=["sessions"])
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

# Pages and views of a session are private to its owner: never stored by a shared cache.
NO_STORE = {"Cache-Control": "no-store"}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Message, "description": "Missing or invalid CSRF token"}
}

UserNameField = Annotated[
    str, Form(min_length=1, max_length=MAX_USER_NAME_LENGTH), AfterValidator(check_user_name)
]
CsrfField = Annotated[str, Form(max_length=128)]


class CsrfRejected(Forbidden):
    def __init__(self) -> None:
        super().__init__("Missing or invalid CSRF token: reload the page and submit it again")


def _require_csrf(session: Session, token: str | None) -> None:
    if not session.csrf_valid(token):
        raise CsrfRejected


def _see_session() -> RedirectResponse:
    return RedirectResponse("/session", status_code=status.HTTP_303_SEE_OTHER, headers=NO_STORE)


@router.get("/save", response_class=HTMLResponse)
async def show_save_form(request: Request, session: SessionDep) -> HTMLResponse:
    """Show the form that saves a user name into the session."""
    return templates.TemplateResponse(
        request,
        "save.html",
        {"csrf_token": session.csrf_token, "user_name": session.data.get(USER_NAME)},
        headers=NO_STORE,
    )


@router.post("/save", status_code=status.HTTP_303_SEE_OTHER, responses=FORBIDDEN)
async def save_user_name(
    session: SessionDep, user_name: UserNameField, csrf_token: CsrfField = ""
) -> RedirectResponse:
    """Save the form's user name into the session (a login: a new session id); see /session."""
    _require_csrf(session, csrf_token)
    await session.login(user_name)
    return _see_session()


@router.get("", response_class=HTMLResponse)
async def show_session(request: Request, session: SessionDep) -> HTMLResponse:
    """Show what the session holds, with the user's other sessions."""
    return templates.TemplateResponse(
        request,
        "session.html",
        {
            "data": session.data,
            "user_name": session.data.get(USER_NAME),
            "sessions": await session.user_sessions(),
            "csrf_token": session.csrf_token,
        },
        headers=NO_STORE,
    )


@router.post("/logout", status_code=status.HTTP_303_SEE_OTHER, responses=FORBIDDEN)
async def log_out(session: SessionDep, csrf_token: CsrfField = "") -> RedirectResponse:
    """End the session: delete its data and clear the cookie."""
    _require_csrf(session, csrf_token)
    await session.end()
    return _see_session()


@router.post("/logout-everywhere", status_code=status.HTTP_303_SEE_OTHER, responses=FORBIDDEN)
async def log_out_everywhere(session: SessionDep, csrf_token: CsrfField = "") -> RedirectResponse:
    """End every session of the session's user, on every device."""
    _require_csrf(session, csrf_token)
    await session.end_user_sessions()
    return _see_session()


def _session_data(session: Session) -> SessionData:
    return SessionData(data=session.data, csrf_token=session.csrf_token)


@router.get("/data")
async def read_session_data(session: SessionDep) -> SessionData:
    """Return what the session holds, and the token its writes must carry."""
    return _session_data(session)


@router.patch("/data", responses=FORBIDDEN)
async def update_session_data(
    body: SessionUpdate,
    session: SessionDep,
    x_csrf_token: Annotated[str | None, Header(max_length=128)] = None,
) -> SessionData:
    """Set session keys (null removes one); other keys, and other requests' writes, stay."""
    _require_csrf(session, x_csrf_token)
    values = {name: value for name, value in body.root.items() if value is not None}
    removed = [name for name, value in body.root.items() if value is None]
    await session.update(values, removed)
    return _session_data(session)


@router.get(
    "/all",
    responses={401: {"model": Message, "description": "No user name saved in this session"}},
)
async def list_user_sessions(session: SessionDep) -> UserSessions:
    """List the sessions of the session's user (ids shown as fingerprints)."""
    user_name = session.data.get(USER_NAME)
    if session.user is None or not isinstance(user_name, str):
        raise Unauthorized("No user name saved in this session: save one at /session/save")
    return UserSessions(
        user_name=user_name,
        sessions=[
            SessionSummary(
                id=info.fingerprint,
                created_at_ms=info.created_at_ms,
                last_seen_at_ms=info.last_seen_at_ms,
                expires_at_ms=info.expires_at_ms,
                current=info.current,
            )
            for info in await session.user_sessions()
        ],
    )
