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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from pydantic import JsonValue

from app.config import SessionSettings
from app.redis import RedisStore
from app.scripting import (
    LuaScript,
    OutcomeErrors,
    Reply,
    as_fixed,
    as_int,
    as_list,
    as_optional_str,
    as_str_list,
    outcome_of,
    raise_for,
)
from app.sessions import keys, metrics
from app.sessions.cookies import cookie_header
from app.sessions.exceptions import SessionEnded
from app.sessions.tokens import SessionId, Signer

LOAD_SESSION = LuaScript.load(Path(__file__).with_name("load_session.lua"))
WRITE_SESSION = LuaScript.load(Path(__file__).with_name("write_session.lua"))
LOGIN_SESSION = LuaScript.load(Path(__file__).with_name("login_session.lua"))
END_SESSIONS = LuaScript.load(Path(__file__).with_name("end_sessions.lua"))
SESSION_TIMES = LuaScript.load(Path(__file__).with_name("session_times.lua"))

DATA_PREFIX = "d:"
USER_NAME = "user_name"
# Sessions of one user ended per script call by "log out everywhere".
END_BATCH = 256
# What a session holds: the values its owner wrote, any JSON (keys and sizes are checked by
# the schemas, the shape is the owner's).
SessionValues = Mapping[str, JsonValue]


class LoadOutcome(IntEnum):
    """What ``load_session.lua`` found; none is an error (the request gets a usable session)."""

    # A logout ended it: the request starts a new session under a new id.
    ENDED = -1
    # Never stored, or expired: the request keeps the id and starts empty.
    MISSING = 0
    FOUND = 1


class WriteOutcome(IntEnum):
    """What ``write_session.lua`` did."""

    # A logout ended the session meanwhile: nothing was written.
    ENDED = 0
    WRITTEN = 1
    # Written, and stored for the first time by this write.
    CREATED = 2


WRITE_ERRORS: OutcomeErrors[WriteOutcome, []] = {
    WriteOutcome.ENDED: SessionEnded,
}


class Loaded(NamedTuple):
    """A session as ``load_session.lua`` answers it: what it found, and its hash's fields."""

    outcome: LoadOutcome
    fields: dict[str, str]


class SessionTimes(NamedTuple):
    """When a session began and was last used (server milliseconds); None once it is gone."""

    created_ms: int | None
    seen_ms: int | None


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


def _flat_data(values: SessionValues) -> list[str]:
    return [
        item for name, value in values.items() for item in (DATA_PREFIX + name, json.dumps(value))
    ]


def _script_head(config: SessionConfig, session_id: SessionId) -> list[str]:
    """Return the arguments the load and write scripts both start with."""
    return [
        str(_now_ms()),
        str(config.lifetime_ms),
        "1" if config.settings.rolling else "0",
        str(session_id),
    ]


def _slot_keys(session_id: SessionId) -> list[str]:
    return [
        keys.session_key(session_id.tag, session_id.token),
        keys.tombstone_key(session_id.tag, session_id.token),
        keys.user_index_key(session_id.tag),
    ]


async def _load(store: RedisStore, config: SessionConfig, session_id: SessionId) -> Loaded:
    reply = as_list(
        await LOAD_SESSION(
            store,
            keys=_slot_keys(session_id),
            args=_script_head(config, session_id),
            what="read session",
        )
    )
    outcome, *found = reply
    flat = as_str_list(found[0]) if found else []
    return Loaded(outcome_of(LoadOutcome, outcome), dict(zip(flat[::2], flat[1::2], strict=True)))


async def _write(
    store: RedisStore,
    config: SessionConfig,
    session_id: SessionId,
    values: SessionValues,
    removed: Sequence[str],
) -> WriteOutcome:
    reply = await WRITE_SESSION(
        store,
        keys=_slot_keys(session_id),
        args=[
            *_script_head(config, session_id),
            str(len(values)),
            *_flat_data(values),
            *(DATA_PREFIX + name for name in removed),
        ],
        what="write session",
    )
    return outcome_of(WriteOutcome, reply)


async def _login(
    store: RedisStore,
    config: SessionConfig,
    session_id: SessionId,
    user_name: str,
    data: SessionValues,
) -> None:
    now = str(_now_ms())
    await LOGIN_SESSION(
        store,
        keys=[
            keys.session_key(session_id.tag, session_id.token),
            keys.user_index_key(session_id.tag),
        ],
        args=[
            now,
            str(config.lifetime_ms),
            keys.index_member(user_name, str(session_id)),
            *_flat_data(data),
            "m:user",
            user_name.casefold(),
            "m:created",
            now,
            "m:seen",
            now,
        ],
        what="log in",
    )


async def _session_times(store: RedisStore, session_ids: list[SessionId]) -> list[SessionTimes]:
    reply = await SESSION_TIMES(
        store,
        keys=[keys.session_key(sid.tag, sid.token) for sid in session_ids],
        args=[],
        what="read sessions",
    )
    return [_times(row) for row in as_list(reply)]


def _times(reply: Reply) -> SessionTimes:
    created, seen = (as_optional_str(value) for value in as_fixed(reply, 2))
    return SessionTimes(
        None if created is None else int(created), None if seen is None else int(seen)
    )


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
        self.data: dict[str, JsonValue] = {
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

    async def update(self, values: SessionValues, remove: Sequence[str] = ()) -> None:
        """Set the keys in ``values`` (JSON values) and remove those in ``remove``."""
        written = await _write(self._store, self._config, self.id, values, remove)
        raise_for(written, WRITE_ERRORS)
        if written is WriteOutcome.CREATED:
            metrics.CREATED.inc()
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
        await _login(self._store, self._config, new, user_name, data)
        metrics.LOGINS.inc()
        metrics.CREATED.inc()
        self.id, self.user, self.data, self.stored = new, user_name.casefold(), data, True
        self.cookie = self._config.signer.cookie_value(new)
        await _end_sessions(self._store, self._config, [(old, old_user)], reason="login")

    async def end(self) -> None:
        """End this session: delete its data and clear the cookie."""
        await _end_sessions(self._store, self._config, [(self.id, self.user)], reason="logout")
        self.data, self.user, self.stored = {}, None, False
        self.cookie = ""

    async def user_sessions(self) -> list[SessionInfo]:
        """Return the live sessions of this session's user (none when nobody is logged in)."""
        if self.user is None:
            return []
        found = await _user_session_ids(self._store, self.user)
        if not found:
            return []
        times = await _session_times(self._store, [session_id for session_id, _expiry in found])
        lifetime = self._config.lifetime_ms
        infos = []
        for (session_id, expiry), (created, seen) in zip(found, times, strict=True):
            if created is None:
                continue
            last_seen = seen or created
            infos.append(
                SessionInfo(
                    fingerprint=session_id.fingerprint(),
                    created_at_ms=created,
                    last_seen_at_ms=last_seen,
                    expires_at_ms=max(expiry, last_seen + lifetime),
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
                self._store,
                self._config,
                [(session_id, user) for session_id, _ in found],
                reason="logout_everywhere",
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
    store: RedisStore,
    config: SessionConfig,
    sessions: list[tuple[SessionId, str | None]],
    *,
    reason: metrics.EndReason,
) -> int:
    """End ``sessions``; return how many of them were stored."""
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
        reply = await END_SESSIONS(
            store,
            keys=script_keys,
            args=[str(config.lifetime_ms), *entries],
            what="end sessions",
        )
        count = as_int(reply)
        metrics.ENDED.labels(reason).inc(count)
        ended += count
    return ended


async def open_session(
    *, store: RedisStore, config: SessionConfig, cookie: str | None, secure: bool
) -> Session:
    """Return the session a request's cookie names, or a new empty one.

    A missing, forged or altered cookie, or one of an ended session, gets a new id (and the
    response a new cookie); a valid one whose session expired or was never stored keeps its id.
    """
    session_id = config.signer.session_id(cookie)
    if session_id is not None:
        loaded = await _load(store, config, session_id)
        if loaded.outcome is not LoadOutcome.ENDED:
            return Session(
                store=store,
                config=config,
                session_id=session_id,
                fields=loaded.fields if loaded.outcome is LoadOutcome.FOUND else None,
                send_cookie=config.settings.rolling,
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
