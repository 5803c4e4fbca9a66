"""Profiles on Redis hashes; every successful operation is appended to ``profile:events``.

Each event is appended before the answer is sent, so every operation a client saw succeed is in
the stream. The profile and the stream live in different hash slots, so the two steps cannot be
one transaction: a crash between them leaves the profile operation done without its event, and
the client, which got no answer, retries (a retry with the same ``Idempotency-Key`` is answered
as the first attempt was and emits the event).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

from app.profiles import keys
from app.profiles.exceptions import (
    CreatedProfileDeleted,
    DeletedProfileCreatedAgain,
    ProfileExists,
    ProfileNotFound,
)
from app.redis import RedisStore
from app.scripting import (
    LuaScript,
    OutcomeErrors,
    Reply,
    as_fixed,
    as_list,
    as_str_list,
    as_text,
    outcome_of,
    raise_for,
)
from app.streams import StreamWriter

EventType = Literal["create", "read", "delete"]

CREATE_PROFILE = LuaScript.load(Path(__file__).with_name("create_profile.lua"))
READ_PROFILE = LuaScript.load(Path(__file__).with_name("read_profile.lua"))
DELETE_PROFILE = LuaScript.load(Path(__file__).with_name("delete_profile.lua"))
# How long a create or delete remembers its request id, so that a re-sent one is recognised
# (by redis-py re-sending after a lost reply, or by a client retrying with an Idempotency-Key).
REQUEST_MARKER_TTL_S = 600


@dataclass(frozen=True)
class EventsConfig:
    """How the profile service spreads and keeps its events (``profiles`` settings): what the
    domain's set-up hands every route, as ``request.state.profiles``."""

    # How many streams the events are spread over (keys.stream_of).
    streams: int = 1
    # How long a deleted profile's generation counter is kept (delete_profile.lua).
    ended_counter_ttl_s: int = 7200

    @classmethod
    def of(cls, retention_s: int, streams: int) -> EventsConfig:
        # Longer than the aggregator remembers the deletion (the retention, from when it is
        # applied), and than a retried request can come back (REQUEST_MARKER_TTL_S).
        return cls(streams=streams, ended_counter_ttl_s=2 * max(retention_s, REQUEST_MARKER_TTL_S))


ONE_STREAM = EventsConfig()


class WriteOutcome(IntEnum):
    """What the create and delete scripts did."""

    # Create found a profile; delete found none.
    REFUSED = 0
    DONE = 1
    # This request did it already (a re-send, or a retry with the same Idempotency-Key).
    REPEATED = 2
    # This request did it already, and the profile changed since: the profile it created was
    # deleted, or the user it deleted has a profile again. Nothing was written; answering as the
    # first attempt did would claim a profile that is gone, or gone one that is there.
    SUPERSEDED = 3


CREATE_ERRORS: OutcomeErrors[WriteOutcome, [str]] = {
    WriteOutcome.REFUSED: lambda _user: ProfileExists(),
    WriteOutcome.SUPERSEDED: CreatedProfileDeleted,
}
DELETE_ERRORS: OutcomeErrors[WriteOutcome, [str]] = {
    WriteOutcome.REFUSED: ProfileNotFound,
    WriteOutcome.SUPERSEDED: DeletedProfileCreatedAgain,
}


class Written(NamedTuple):
    """A create or delete script's answer: what it did, and the generation it concerns."""

    outcome: WriteOutcome
    generation: str


class Found(NamedTuple):
    """A profile's generation and fields, as the read script answers."""

    generation: str
    fields: dict[str, str]


async def emit_event(
    *,
    streams: StreamWriter,
    user: str,
    event: EventType,
    generation: str,
    config: EventsConfig = ONE_STREAM,
) -> str:
    """Append ``{"user", "type", "generation"}`` to the user's event stream; return its id.

    ``user`` and ``type`` are the seeds' fields; ``generation`` numbers the profile's life (from
    create to delete), so the aggregator can tell a late event of an earlier life from one of
    the current life, whatever order they arrive in.
    """
    fields = {"user": user, "type": event}
    if generation:  # none for a profile written by other code, as the seeds' events
        fields["generation"] = generation
    return await streams.append(keys.stream_of(user, config.streams), fields)


def _profile_keys(user: str, marker: str) -> list[str]:
    return [
        keys.profile_key(user),
        keys.companion_key(user, marker),
        keys.companion_key(user, "generation"),
    ]


async def _write(
    script: LuaScript, store: RedisStore, *, user: str, marker: str, args: list[str], what: str
) -> Written:
    reply = await script(store, keys=_profile_keys(user, marker), args=args, what=what)
    outcome, generation = as_fixed(reply, 2)
    return Written(outcome_of(WriteOutcome, outcome), as_text(generation))


async def _read(store: RedisStore, user: str) -> Found | None:
    """Read a profile: from a replica of its shard with redis.read_from_replicas, and then,
    if the replica has none, from the primary (a profile created a moment ago may not have
    reached the replica yet: the read then answers as a primary would)."""
    reply = await _read_on(store, user, replica=True)
    if not reply and store.read_from_replicas:
        reply = await _read_on(store, user, replica=False)
    if not reply:
        return None
    generation, flat = as_fixed(reply, 2)
    pairs = as_str_list(flat)
    return Found(as_text(generation), dict(zip(pairs[::2], pairs[1::2], strict=True)))


async def _read_on(store: RedisStore, user: str, *, replica: bool) -> list[Reply]:
    return as_list(
        await READ_PROFILE(
            store,
            keys=[keys.profile_key(user), keys.companion_key(user, "generation")],
            args=[],
            what="read profile",
            replica=replica,
        )
    )


async def create_profile(
    *,
    store: RedisStore,
    streams: StreamWriter,
    user: str,
    fields: dict[str, str],
    request_id: str | None = None,
    config: EventsConfig = ONE_STREAM,
) -> None:
    """Store a new profile; raise ProfileExists if the user already has one, CreatedProfileDeleted
    for a retry whose profile has been deleted since."""
    flat = [item for pair in fields.items() for item in pair]
    written = await _write(
        CREATE_PROFILE,
        store,
        user=user,
        marker="created-by",
        args=[request_id or uuid.uuid4().hex, str(REQUEST_MARKER_TTL_S), *flat],
        what="create profile",
    )
    if written.outcome is not WriteOutcome.REFUSED:
        # Also for a repeated request: its first attempt may have died before this append (the
        # aggregator ignores the event of a generation it has seen deleted).
        await emit_event(
            streams=streams,
            user=user,
            event="create",
            generation=written.generation,
            config=config,
        )
    raise_for(written.outcome, CREATE_ERRORS, user)


async def read_profile(
    *, store: RedisStore, streams: StreamWriter, user: str, config: EventsConfig = ONE_STREAM
) -> dict[str, str]:
    """Return a profile's fields and record the read; raise ProfileNotFound."""
    found = await _read(store, user)
    if found is None:
        raise ProfileNotFound(user)
    await emit_event(
        streams=streams, user=user, event="read", generation=found.generation, config=config
    )
    return found.fields


async def delete_profile(
    *,
    store: RedisStore,
    streams: StreamWriter,
    user: str,
    request_id: str | None = None,
    config: EventsConfig = ONE_STREAM,
) -> None:
    """Delete a profile; raise ProfileNotFound if there is none, DeletedProfileCreatedAgain for a
    retry whose user has a profile again since."""
    written = await _write(
        DELETE_PROFILE,
        store,
        user=user,
        marker="deleted-by",
        args=[
            request_id or uuid.uuid4().hex,
            str(REQUEST_MARKER_TTL_S),
            str(config.ended_counter_ttl_s),
        ],
        what="delete profile",
    )
    if written.outcome is not WriteOutcome.REFUSED:
        # Also for a repeated request: the event names the generation it ended, so it cannot end
        # a profile created since.
        await emit_event(
            streams=streams,
            user=user,
            event="delete",
            generation=written.generation,
            config=config,
        )
    raise_for(written.outcome, DELETE_ERRORS, user)


async def ranked_by_reads(
    *, store: RedisStore, stream: str, start: int, count: int, replica: bool = False
) -> list[tuple[str, int]]:
    """Return ``count`` (user, read count) pairs from rank ``start``, most read first, of the
    users whose events go to ``stream`` (each user's count is in one stream's keys); from a
    replica with ``replica`` and redis.read_from_replicas.

    The counts are the aggregator's; a user may have no profile any more (see ``existing``).
    """
    counts = keys.read_counts(stream)
    reply = await store.call(
        counts,
        "ZREVRANGE",
        counts,
        start,
        start + count - 1,
        "WITHSCORES",
        what="read profile stats",
        replica=replica,
    )
    return score_pairs(reply)


def score_pairs(reply: list[Any]) -> list[tuple[str, int]]:
    """Return a WITHSCORES reply, ``[[member, score], ...]`` (RESP3) or flat (RESP2), as pairs."""
    if reply and not isinstance(reply[0], list):
        reply = [reply[i : i + 2] for i in range(0, len(reply), 2)]
    return [(str(member), int(float(score))) for member, score in reply]


async def existing(*, store: RedisStore, users: list[str], replica: bool = False) -> list[bool]:
    """Return, for each user, whether they have a profile now (from replicas with
    ``replica`` and redis.read_from_replicas)."""
    found = await asyncio.gather(
        *(
            store.call(
                keys.profile_key(user),
                "EXISTS",
                keys.profile_key(user),
                what="check profiles exist",
                replica=replica,
            )
            for user in users
        )
    )
    return [bool(exists) for exists in found]
