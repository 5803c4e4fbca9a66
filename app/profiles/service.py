"""Profiles on Redis hashes; every successful operation is appended to ``profile:events``.

Each event is appended before the answer is sent, so every operation a client saw succeed is in
the stream. The profile and the stream live in different hash slots, so the two steps cannot be
one transaction: a crash between them leaves the profile operation done without its event, and
the client, which got no answer, retries (a retry with the same ``Idempotency-Key`` is answered
as the first attempt was and emits the event).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Literal

from app.profiles import keys
from app.profiles.exceptions import ProfileExists, ProfileNotFound
from app.redis import RedisStore
from app.scripting import LuaScript

EventType = Literal["create", "read", "delete"]

CREATE_PROFILE = LuaScript.load(Path(__file__).with_name("create_profile.lua"))
READ_PROFILE = LuaScript.load(Path(__file__).with_name("read_profile.lua"))
DELETE_PROFILE = LuaScript.load(Path(__file__).with_name("delete_profile.lua"))
# How long a create or delete remembers its request id, so that a re-sent one is recognised
# (by redis-py re-sending after a lost reply, or by a client retrying with an Idempotency-Key).
REQUEST_MARKER_TTL_S = 600
# The scripts' outcome when they change nothing: create found a profile, delete found none.
REFUSED = 0


async def emit_event(*, store: RedisStore, user: str, event: EventType, generation: str) -> str:
    """Append ``{"user", "type", "generation"}`` to the profile event stream; return its id.

    ``user`` and ``type`` are the seeds' fields; ``generation`` numbers the profile's life (from
    create to delete), so the aggregator can tell a late event of an earlier life from one of
    the current life, whatever order they arrive in.
    """
    fields = {"user": user, "type": event, "generation": generation}
    return await store.streams.append(keys.EVENTS_STREAM, fields)


def _profile_keys(user: str, marker: str) -> list[str]:
    return [
        keys.profile_key(user),
        keys.companion_key(user, marker),
        keys.companion_key(user, "generation"),
    ]


async def create_profile(
    *,
    store: RedisStore,
    user: str,
    fields: dict[str, str],
    request_id: str | None = None,
) -> None:
    """Store a new profile; raise ProfileExists if the user already has one."""
    flat = [item for pair in fields.items() for item in pair]
    outcome, generation = await CREATE_PROFILE(
        store,
        keys=_profile_keys(user, "created-by"),
        args=[request_id or uuid.uuid4().hex, str(REQUEST_MARKER_TTL_S), *flat],
        what="create profile",
    )
    if outcome == REFUSED:
        raise ProfileExists
    # Also for a repeated request: its first attempt may have died before this append.
    await emit_event(store=store, user=user, event="create", generation=str(generation))


async def read_profile(*, store: RedisStore, user: str) -> dict[str, str]:
    """Return a profile's fields and record the read; raise ProfileNotFound."""
    found = await READ_PROFILE(
        store,
        keys=[keys.profile_key(user), keys.companion_key(user, "generation")],
        args=[],
        what="read profile",
    )
    if not found:
        raise ProfileNotFound(user)
    generation, flat = found
    await emit_event(store=store, user=user, event="read", generation=str(generation))
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def delete_profile(*, store: RedisStore, user: str, request_id: str | None = None) -> None:
    """Delete a profile; raise ProfileNotFound if there is none."""
    outcome, generation = await DELETE_PROFILE(
        store,
        keys=_profile_keys(user, "deleted-by"),
        args=[request_id or uuid.uuid4().hex, str(REQUEST_MARKER_TTL_S)],
        what="delete profile",
    )
    if outcome == REFUSED:
        raise ProfileNotFound(user)
    # Also for a repeated request: the event names the generation it ended, so it cannot end a
    # profile created since.
    await emit_event(store=store, user=user, event="delete", generation=str(generation))
