"""Writing the session cookie into every response, whatever the route returns."""

from __future__ import annotations

from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where the session dependency leaves the request's session: the request's state, which is the
# scope's "state" dict.
SESSION_STATE = "session"


class CookieSource(Protocol):
    """What this layer needs of a request's session: the header its response must carry."""

    def set_cookie_header(self) -> bytes | None: ...


class SessionCookies:
    """Add the Set-Cookie header a request's session asks for to its response.

    The session changes while the route runs (a login gives it a new id, a logout clears it),
    and a route may return its own response (a redirect, a page), which FastAPI sends without
    the headers set on an injected ``Response``; this pure ASGI layer adds the header when the
    response starts, so every route and error answer carries the session's final cookie.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                session: CookieSource | None = scope.get("state", {}).get(SESSION_STATE)
                header = session.set_cookie_header() if session is not None else None
                if header is not None:
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
