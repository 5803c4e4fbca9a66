"""The session pages (the patterns post's /session/save form) and their JSON view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Header, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.errors import Forbidden, Unauthorized
from app.schemas import Message
from app.sessions.dependencies import SessionDep
from app.sessions.openapi import (
    FORBIDDEN,
    PAGE_ANSWERS,
    SESSION_COOKIE,
    SESSION_DATA_ANSWER,
    follow_session,
    see_session,
)
from app.sessions.schemas import (
    EXAMPLE_CSRF,
    MAX_CSRF_TOKEN_LENGTH,
    CsrfForm,
    SaveForm,
    SessionData,
    SessionSummary,
    SessionUpdate,
    UserSessions,
)
from app.sessions.service import USER_NAME, Session

router = APIRouter(prefix="/session", tags=["sessions"])
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

# Pages and views of a session are private to its owner: never stored by a shared cache.
NO_STORE = {"Cache-Control": "no-store"}

# A logout form sent without a body: no token, so it is refused with 403 like a wrong one.
CSRF_MISSING = CsrfForm()


class CsrfRejected(Forbidden):
    def __init__(self) -> None:
        super().__init__("Missing or invalid CSRF token: reload the page and submit it again")


def _require_csrf(session: Session, token: str) -> None:
    if not session.csrf_valid(token):
        raise CsrfRejected


def _see_other() -> RedirectResponse:
    return RedirectResponse("/session", status_code=status.HTTP_303_SEE_OTHER, headers=NO_STORE)


@router.get(
    "/save",
    response_class=HTMLResponse,
    summary="Show the save-a-name form",
    responses=PAGE_ANSWERS,
    openapi_extra=SESSION_COOKIE,
)
async def show_save_form(request: Request, session: SessionDep) -> HTMLResponse:
    """Show the form that saves a user name into the session."""
    return templates.TemplateResponse(
        request,
        "save.html",
        {"csrf_token": session.csrf_token, "user_name": session.data.get(USER_NAME)},
        headers=NO_STORE,
    )


@router.post(
    "/save",
    response_class=RedirectResponse,
    status_code=status.HTTP_303_SEE_OTHER,
    summary="Save a user name (log in)",
    responses={
        303: see_session(
            "Saved: the session has a new id (its cookie is set), the old one has ended",
            follow_session(with_token=False),
        ),
        **FORBIDDEN,
    },
    openapi_extra=SESSION_COOKIE,
)
async def save_user_name(
    session: SessionDep, form: Annotated[SaveForm, Form()]
) -> RedirectResponse:
    """Save the form's user name into the session (a login: a new session id); see /session."""
    _require_csrf(session, form.csrf_token)
    await session.login(form.user_name)
    return _see_other()


@router.get(
    "",
    response_class=HTMLResponse,
    summary="Show the session page",
    responses=PAGE_ANSWERS,
    openapi_extra=SESSION_COOKIE,
)
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


@router.post(
    "/logout",
    response_class=RedirectResponse,
    status_code=status.HTTP_303_SEE_OTHER,
    summary="Log out",
    responses={
        303: see_session("Ended: the session's data is deleted, its cookie cleared"),
        **FORBIDDEN,
    },
    openapi_extra=SESSION_COOKIE,
)
async def log_out(
    session: SessionDep, form: Annotated[CsrfForm, Form()] = CSRF_MISSING
) -> RedirectResponse:
    """End the session: delete its data and clear the cookie."""
    _require_csrf(session, form.csrf_token)
    await session.end()
    return _see_other()


@router.post(
    "/logout-everywhere",
    response_class=RedirectResponse,
    status_code=status.HTTP_303_SEE_OTHER,
    summary="Log out everywhere",
    responses={
        303: see_session("Ended: every session of the user, this one included"),
        **FORBIDDEN,
    },
    openapi_extra=SESSION_COOKIE,
)
async def log_out_everywhere(
    session: SessionDep, form: Annotated[CsrfForm, Form()] = CSRF_MISSING
) -> RedirectResponse:
    """End every session of the session's user, on every device."""
    _require_csrf(session, form.csrf_token)
    await session.end_user_sessions()
    return _see_other()


def _session_data(session: Session) -> SessionData:
    return SessionData(data=session.data, csrf_token=session.csrf_token)


@router.get(
    "/data",
    summary="Read the session's data",
    responses={200: {"description": "The session's data and CSRF token", **SESSION_DATA_ANSWER}},
    openapi_extra=SESSION_COOKIE,
)
async def read_session_data(session: SessionDep) -> SessionData:
    """Return what the session holds, and the token its writes must carry."""
    return _session_data(session)


@router.patch(
    "/data",
    summary="Set or remove session keys",
    responses={
        200: {"description": "Written: the session's data after the write", **SESSION_DATA_ANSWER},
        **FORBIDDEN,
        409: {"model": Message, "description": "The session ended meanwhile: nothing written"},
    },
    openapi_extra=SESSION_COOKIE,
)
async def update_session_data(
    body: SessionUpdate,
    session: SessionDep,
    x_csrf_token: Annotated[
        str,
        Header(
            max_length=MAX_CSRF_TOKEN_LENGTH,
            description="The session's CSRF token (`csrf_token` of GET /session/data); a "
            "missing or wrong one is refused with 403.",
            examples=[EXAMPLE_CSRF],
        ),
    ] = "",
) -> SessionData:
    """Set session keys (null removes one); other keys, and other requests' writes, stay."""
    _require_csrf(session, x_csrf_token)
    values = {name: value for name, value in body.root.items() if value is not None}
    removed = [name for name, value in body.root.items() if value is None]
    await session.update(values, removed)
    return _session_data(session)


@router.get(
    "/all",
    summary="List the user's sessions",
    responses={401: {"model": Message, "description": "No user name saved in this session"}},
    openapi_extra=SESSION_COOKIE,
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
