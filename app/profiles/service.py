"""Profiles on Redis hashes; every successful operation is appended to ``profile:events``.

Each event is appended before the answer is sent, so every operation a client saw succeed is in
the stream. The profile and the stream live in different hash slots, so the two steps cannot be
one transaction: a crash between them leaves the profile operation done without its event, and
the client, which got no answer, retries (a create retried with the same ``Idempotency-Key``
answers 201 and emits the event).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Literal

from app.profiles import keys
from app.profiles.exceptions import ProfileExists, ProfileNotFound
from app.redis import RedisStore
from app.scripting import LuaScript
from app.streams import StreamWriter

EventType = Literal["create", "read", "delete"]

CREATE_PROFILE = LuaScript.load(Path(__file__).with_name("create_profile.lua"))
DELETE_PROFILE = LuaScript.load(Path(__file__).with_name("delete_profile.lua"))
# How long a create or delete remembers its request id, so that a re-sent one is recognised
# (by redis-py re-sending after a lost reply, or by a client retrying with an Idempotency-Key).
REQUEST_MARKER_TTL_S = 600
# What the create and delete scripts return for a repeated request whose effect was undone since
# (see the scripts): answered as before, with no new event, so the read counts stay right.
STATE_CHANGED_SINCE = 3


async def emit_event(*, events: StreamWriter, user: str, event: EventType) -> str:
    """Append ``{"user": user, "type": event}`` to the profile event stream; return its id."""
    return await events.append(keys.EVENTS_STREAM, {"user": user, "type": event})


async def create_profile(
    *,
    store: RedisStore,
    events: StreamWriter,
    user: str,
    fields: dict[str, str],
    request_id: str | None = None,
) -> None:
    """Store a new profile; raise ProfileExists if the user already has one."""
    flat = [item for pair in fields.items() for item in pair]
    outcome = await CREATE_PROFILE(
        store,
        keys=[keys.profile_key(user), keys.request_marker_key(user, "created-by")],
        args=[request_id or uuid.uuid4().hex, str(REQUEST_MARKER_TTL_S), *flat],
        what="create profile",
    )
    if outcome == 0:
        raise ProfileExists
    if outcome != STATE_CHANGED_SINCE:
        await emit_event(events=events, user=user, event="create")


async def read_profile(*, store: RedisStore, events: StreamWriter, user: str) -> dict[str, str]:
    """Return a profile's fields and record the read; raise ProfileNotFound."""
    key = keys.profile_key(user)
    fields: dict[str, str] = await store.call(key, "HGETALL", key, what="read profile")
    if not fields:
        raise ProfileNotFound(user)
    await emit_event(events=events, user=user, event="read")
    return fields


async def delete_profile(
    *, store: RedisStore, events: StreamWriter, user: str, request_id: str | None = None
) -> None:
    """Delete a profile; raise ProfileNotFound if there is none."""
    outcome = await DELETE_PROFILE(
        store,
        keys=[keys.profile_key(user), keys.request_marker_key(user, "deleted-by")],
        args=[request_id or uuid.uuid4().hex, str(REQUEST_MARKER_TTL_S)],
        what="delete profile",
    )
    if outcome == 0:
        raise ProfileNotFound(user)
    if outcome != STATE_CHANGED_SINCE:
        await emit_event(events=events, user=user, event="delete")
