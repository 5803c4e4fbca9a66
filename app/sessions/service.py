"""Durable server-side sessions in Redis (the patterns post's Flask-Session store, done safely).

A session is the hash ``session:{<tag>}:<token>`` (``app.sessions.keys``): data keys as
``d:<key>`` with JSON values, and ``m:created``, ``m:seen`` and, once a user name is saved (a
login), ``m:user``. Redis expires it ``lifetime_s`` after its last use (rolling) or after it
began. Every change is one script on the session's slot that sets or removes only the keys it
names, so concurrent requests writing different keys keep each other's writes; ending a session
leaves a tombstone for one lifetime, so a write racing the logout cannot bring it back.

A request without a valid cookie gets a new id and an empty session, stored only when something
is written to it (the form's token is derived from the id, so showing the form stores nothing).
A login moves the session's data to a new id in the user's slot and ends the old one, so an id
planted before the login is worthless after it. The data is copied, so a write made by another
request of the old session while the login runs can be left behind with the old session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import SessionSettings
from app.errors import AppError
from app.redis import RedisStore
from app.scripting import LuaScript
from app.sessions import keys
from app.sessions.middleware import cookie_header
from app.sessions.tokens import SessionId, Signer

LOAD_SESSION = LuaScript.load(Path(__file__).with_name("load_session.lua"))
WRITE_SESSION = LuaScript.load(Path(__file__).with_name("write_session.lua"))
LOGIN_SESSION = LuaScript.load(Path(__file__).with_name("login_session.lua"))
END_SESSIONS = LuaScript.load(Path(__file__).with_name("end_sessions.lua"))
SESSION_TIMES = LuaScript.load(Path(__file__).with_name("session_times.lua"))

DATA_PREFIX = "d:"
USER_NAME = "user_name"
ENDED, MISSING = -1, 0
# Sessions of one user ended per script call by "log out everywhere".
END_BATCH = 256


class SessionEnded(AppError):
    """A write reached a session that a logout ended meanwhile."""

    status_code = 409

    def __init__(self) -> None:
        super().__init__("This session has ended; reload to start a new one")


@dataclass(frozen=True)
class SessionConfig:
    """The session settings and the signer made from their secret."""

    settings: SessionSettings
    signer: Signer

    @classmethod
    def from_settings(cls, settings: SessionSettings) -> SessionConfig:
        return cls(settings, Signer(settings.secret_key.get_secret_value()))

    @property
    def lifetime_ms(self) -> int:
        return self.settings.lifetime_s * 1000


@dataclass(frozen=True)
class SessionInfo:
    """One of a user's sessions, as its owner may see it (never its id)."""

    fingerprint: str
    created_at_ms: int
    last_seen_at_ms: int
    expires_at_ms: int
    current: bool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _flat_data(values: dict[str, Any]) -> list[str]:
    return [
        item for name, value in values.items() for item in (DATA_PREFIX + name, json.dumps(value))
    ]


def _slot_keys(session_id: SessionId) -> list[str]:
    return [
        keys.session_key(session_id.tag, session_id.token),
        keys.tombstone_key(session_id.tag, session_id.token),
        keys.user_index_key(session_id.tag),
    ]


class Session:
    """One request's view of its session; changes are stored at once, one script each.

    ``cookie`` is what the response must set (a value, '' to clear it, None to leave it): the
    ``SessionCookies`` middleware writes it into the response, whatever the route returns.
    """

    def __init__(
        self,
        *,
        store: RedisStore,
        config: SessionConfig,
        session_id: SessionId,
        fields: dict[str, str] | None,
        send_cookie: bool,
        secure: bool,
    ) -> None:
        self._store = store
        self._config = config
        self._secure = secure
        self.id = session_id
        self.stored = fields is not None
        fields = fields or {}
        self.data: dict[str, Any] = {
            name.removeprefix(DATA_PREFIX): json.loads(value)
            for name, value in fields.items()
            if name.startswith(DATA_PREFIX)
        }
        self.user: str | None = fields.get("m:user")
        self.cookie: str | None = config.signer.cookie_value(session_id) if send_cookie else None

    def set_cookie_header(self) -> bytes | None:
        """Return the Set-Cookie header the response needs, or None."""
        if self.cookie is None:
            return None
        settings = self._config.settings
        return cookie_header(
            settings.cookie_name, self.cookie, max_age=settings.lifetime_s, secure=self._secure
        )

    @property
    def csrf_token(self) -> str:
        """The token a form or an API write of this session must carry."""
        return self._config.signer.csrf_token(self.id)

    def csrf_valid(self, token: str | None) -> bool:
        """Return True if ``token`` is this session's form token."""
        return self._config.signer.csrf_valid(self.id, token)

    async def update(self, values: dict[str, Any], remove: Iterable[str] = ()) -> None:
        """Set the keys in ``values`` (JSON values) and remove those in ``remove``."""
        removed = [DATA_PREFIX + name for name in remove]
        flat = [
            item
            for name, value in values.items()
            for item in (DATA_PREFIX + name, json.dumps(value))
        ]
        settings = self._config.settings
        written = await WRITE_SESSION(
            self._store,
            keys=_slot_keys(self.id),
            args=[
                str(_now_ms()),
                str(self._config.lifetime_ms),
                "1" if settings.rolling else "0",
                str(self.id),
                str(len(values)),
                *flat,
                *removed,
            ],
            what="write session",
        )
        if not written:
            raise SessionEnded
        if not self.stored:
            self.cookie = self._config.signer.cookie_value(self.id)
        self.stored = True
        self.data.update(values)
        for name in remove:
            self.data.pop(name, None)

    async def login(self, user_name: str) -> None:
        """Save ``user_name`` in a new session that carries this one's data; end this one."""
        old, old_user = self.id, self.user
        new = SessionId.new(keys.user_tag(user_name))
        data = {**self.data, USER_NAME: user_name}
        now = str(_now_ms())
        flat = [
            item for name, value in data.items() for item in (DATA_PREFIX + name, json.dumps(value))
        ]
        await LOGIN_SESSION(
            self._store,
            keys=[keys.session_key(new.tag, new.token), keys.user_index_key(new.tag)],
            args=[
                now,
                str(self._config.lifetime_ms),
                keys.index_member(user_name, str(new)),
                *flat,
                "m:user",
                user_name.casefold(),
                "m:created",
                now,
                "m:seen",
                now,
            ],
            what="log in",
        )
        self.id, self.user, self.data, self.stored = new, user_name.casefold(), data, True
        self.cookie = self._config.signer.cookie_value(new)
        await self._end([(old, old_user)])

    async def end(self) -> None:
        """End this session: delete its data and clear the cookie."""
        await self._end([(self.id, self.user)])
        self.data, self.user, self.stored = {}, None, False
        self.cookie = ""

    async def _end(self, sessions: list[tuple[SessionId, str | None]]) -> None:
        await _end_sessions(self._store, self._config, sessions)

    async def user_sessions(self) -> list[SessionInfo]:
        """Return the live sessions of this session's user (none when nobody is logged in)."""
        if self.user is None:
            return []
        found = await _user_session_ids(self._store, self.user)
        if not found:
            return []
        session_ids = [session_id for session_id, _expiry in found]
        times = await SESSION_TIMES(
            self._store,
            keys=[keys.session_key(sid.tag, sid.token) for sid in session_ids],
            args=[],
            what="read sessions",
        )
        lifetime = self._config.lifetime_ms
        infos = []
        for (session_id, expiry), (created, seen) in zip(found, times, strict=True):
            if created is None:
                continue
            infos.append(
                SessionInfo(
                    fingerprint=session_id.fingerprint(),
                    created_at_ms=int(created),
                    last_seen_at_ms=int(seen or created),
                    expires_at_ms=max(expiry, int(seen or created) + lifetime),
                    current=session_id == self.id,
                )
            )
        return sorted(infos, key=lambda info: info.created_at_ms)

    async def end_user_sessions(self) -> int:
        """End every session of this session's user, this one included; return how many."""
        if self.user is None:
            return 0
        user, ended = self.user, 0
        while found := await _user_session_ids(self._store, user, limit=END_BATCH):
            ended += await _end_sessions(
                self._store, self._config, [(session_id, user) for session_id, _ in found]
            )
        self.data, self.user, self.stored = {}, None, False
        self.cookie = ""
        return ended


async def _user_session_ids(
    store: RedisStore, user: str, limit: int | None = None
) -> list[tuple[SessionId, int]]:
    index = keys.user_index_key(keys.user_tag(user))
    prefix = user.casefold() + keys.SEPARATOR
    upper = user.casefold() + "\x01"
    bounds: list[str | int] = ["LIMIT", 0, limit] if limit else []
    members: list[str] = await store.call(
        index, "ZRANGE", index, "[" + prefix, "(" + upper, "BYLEX", *bounds, what="list sessions"
    )
    if not members:
        return []
    scores: list[float | None] = await store.call(
        index, "ZMSCORE", index, *members, what="list sessions"
    )
    found = []
    for member, score in zip(members, scores, strict=True):
        session_id = SessionId.parse(member.removeprefix(prefix))
        if session_id is not None and score is not None:
            found.append((session_id, int(score)))
    return found


async def _end_sessions(
    store: RedisStore, config: SessionConfig, sessions: list[tuple[SessionId, str | None]]
) -> int:
    by_slot: dict[str, list[tuple[SessionId, str | None]]] = {}
    for session_id, user in sessions:
        by_slot.setdefault(session_id.tag, []).append((session_id, user))
    ended = 0
    for tag, group in by_slot.items():
        script_keys = [keys.user_index_key(tag)]
        entries = []
        for session_id, user in group:
            script_keys += [
                keys.session_key(tag, session_id.token),
                keys.tombstone_key(tag, session_id.token),
            ]
            entries.append(keys.index_member(user, str(session_id)) if user else "")
        ended += await END_SESSIONS(
            store,
            keys=script_keys,
            args=[str(config.lifetime_ms), *entries],
            what="end sessions",
        )
    return ended


async def open_session(
    *, store: RedisStore, config: SessionConfig, cookie: str | None, secure: bool
) -> Session:
    """Return the session a request's cookie names, or a new empty one.

    A missing, forged or altered cookie, or one of an ended session, gets a new id (and the
    response a new cookie); a valid one whose session expired or was never stored keeps its id.
    """
    rolling = config.settings.rolling
    session_id = config.signer.session_id(cookie)
    if session_id is not None:
        outcome, *rest = await LOAD_SESSION(
            store,
            keys=_slot_keys(session_id),
            args=[
                str(_now_ms()),
                str(config.lifetime_ms),
                "1" if rolling else "0",
                str(session_id),
            ],
            what="read session",
        )
        if outcome != ENDED:
            flat = rest[0] if rest else []
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if outcome != MISSING else None
            return Session(
                store=store,
                config=config,
                session_id=session_id,
                fields=fields,
                send_cookie=rolling,
                secure=secure,
            )
    return Session(
        store=store,
        config=config,
        session_id=SessionId.new(),
        fields=None,
        send_cookie=True,
        secure=secure,
    )
