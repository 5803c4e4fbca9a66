"""Durable server-side sessions (the patterns post's session store): a signed cookie, the data in
Redis, logins that change the id, and "log out everywhere".

Public to other domains (import them from ``app.sessions``): ``SessionDep`` (a route's
session), ``Session``, ``SessionConfig`` (found as ``request.state.sessions``) and the
``SessionCookies`` middleware that writes the cookie.
"""

from starlette.middleware import Middleware

from app.domain import Context, Domain, KeyPattern
from app.sessions.dependencies import SessionDep
from app.sessions.middleware import SessionCookies
from app.sessions.router import router
from app.sessions.service import Session, SessionConfig

__all__ = ["DOMAIN", "Session", "SessionConfig", "SessionCookies", "SessionDep"]


async def setup(context: Context) -> SessionConfig:
    """Return the session settings and signer every request of this process uses."""
    return SessionConfig.from_settings(context.settings.sessions)


DOMAIN = Domain(
    name="sessions",
    routers=[router],
    middleware=[Middleware(SessionCookies)],
    keys=[
        KeyPattern("session:{*}:*", "read-write", "sessions' data (one hash per session)"),
        KeyPattern("session-ended:{*}:*", "read-write", "tombstones of ended sessions"),
        KeyPattern("sessions:by-user:{*}", "read-write", "the per-user session indexes"),
    ],
    commands=[
        "+evalsha",
        "+script|load",
        "+zrange",
        "+zmscore",
        # Run by the session scripts.
        "+exists",
        "+del",
        "+set",
        "+hget",
        "+hgetall",
        "+hmget",
        "+hset",
        "+hdel",
        "+pexpire",
        "+zadd",
        "+zrem",
        "+zremrangebyscore",
    ],
    setup=setup,
)
