"""The session as a FastAPI dependency, usable by every router: ``session: SessionDep``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.dependencies import RedisDep
from app.sessions.middleware import SESSION_STATE
from app.sessions.service import Session, SessionConfig, open_session


async def get_session(request: Request, store: RedisDep) -> Session:
    """Open the session the request's cookie names (a new one without a valid cookie)."""
    config: SessionConfig = request.state.sessions
    mode = config.settings.secure
    secure = mode == "always" or (mode == "auto" and request.url.scheme == "https")
    session = await open_session(
        store=store,
        config=config,
        cookie=request.cookies.get(config.settings.cookie_name),
        secure=secure,
    )
    setattr(request.state, SESSION_STATE, session)
    return session


SessionDep = Annotated[Session, Depends(get_session)]
