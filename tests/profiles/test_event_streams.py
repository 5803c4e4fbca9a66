"""Profile events over several streams (profiles.event_streams), changing their number, and
their retention (profiles.events_retention_s)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.errors import StartupRefused
from app.local_cluster import LocalCluster
from app.profiles import keys
from app.profiles.aggregator import apply_retention
from app.profiles.layout import LayoutChangeRefused, change_event_streams
from app.redis import RedisStore, open_store
from tests.conftest import (
    PROJECT_ROOT,
    all_events_applied,
    eventually,
    expected_read_counts,
    running_app,
    shard_of,
    stored_read_counts,
)

pytestmark = pytest.mark.services("profiles", "reporting")

USERS = [f"user-{n}" for n in range(40)]


def with_profiles(settings: Settings, **profiles: Any) -> Settings:
    """Return ``settings`` with these ``[profiles]`` settings changed."""
    return settings.model_copy(update={"profiles": settings.profiles.model_copy(update=profiles)})


@pytest.fixture
async def admin(cluster: LocalCluster, settings: Settings) -> AsyncIterator[RedisStore]:
    """A store as the cluster's default user, as an operator runs the command line."""
    async with open_store(settings.redis, cluster.url) as store:
        yield store


async def read_profiles(http: httpx.AsyncClient, reads: Counter[str], rounds: int) -> None:
    """Read each user's profile a different number of times, counting the reads answered."""
    for turn in range(rounds):
        for index, user in enumerate(USERS):
            if index % (turn + 1) == 0:
                answer = await http.get(f"/profile/{user}")
                assert answer.status_code == 200
                reads[user] += 1


def top(reads: Counter[str], n: int) -> list[dict[str, Any]]:
    ranked = sorted(reads.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return [{"user": user, "score": score} for user, score in ranked[:n]]


async def test_events_spread_over_streams_with_exact_counts_and_report(
    settings: Settings, redis: RedisCluster
) -> None:
    settings = with_profiles(settings, event_streams=3)
    reads: Counter[str] = Counter()
    async with running_app(settings) as (http, _state):
        for user in USERS:
            assert (await http.post(f"/profile/{user}", json={"n": user})).status_code == 201
        await read_profiles(http, reads, rounds=4)
        await eventually(lambda: all_events_applied(redis, 3), what="every stream applied")
        # Each stream has its own group, counts and register, in its own slot.
        streams = keys.event_streams(3)
        for stream in streams:
            own = {u for u in USERS if keys.stream_of(u, 3) == stream}
            assert own, f"no user maps to {stream}"
            entries: Any = await redis.xrange(stream)
            assert {fields["user"] for _id, fields in entries} == own
            counted = await redis.zrange(keys.read_counts(stream), 0, -1)
            assert set(counted) == own
        # profile:events and profile:events:2 are on different shards of the 3-shard cluster.
        assert len({shard_of(redis, stream) for stream in streams}) >= 2
        assert await stored_read_counts(redis, 3) == dict(reads)
        assert await expected_read_counts(redis, 3) == dict(reads)
        # The report merges every stream's top n exactly, ties ordered as Redis orders them:
        # as ZREVRANGE over one sorted set of every count.
        together = "{report-test}:all-counts"
        await redis.zadd(together, dict(reads))
        for n in (1, 7, 40):
            report = await http.get(f"/reporting/profileStats/{n}")
            ranked: Any = await redis.zrevrange(together, 0, n - 1, withscores=True)
            expected = [{"user": user, "score": int(score)} for user, score in ranked]
            assert report.json() == {"results": expected}
            assert expected == top(reads, n)
        # Each stream's length and group lag are exported.
        exported = (await http.get("/metrics")).text
        for stream in streams:
            assert f'mdb_stream_length{{stream="{stream}"}}' in exported
            assert f'mdb_stream_group_lag{{group="profile-aggregator",stream="{stream}"}} 0.0' in (
                exported
            )
        # The dashboard shows them as one pipeline: summed lengths, the aggregator's group.
        pipeline = (await http.get("/dashboard/data")).json()["pipeline"]
        assert pipeline["stream"]["stream"] == "profile:events (+2)"
        assert pipeline["stream"]["length"] == len(USERS) + sum(reads.values())
        assert [g["group"] for g in pipeline["stream"]["groups"]] == ["profile-aggregator"]
        assert pipeline["stream"]["groups"][0]["consumers"] == 3
        # A deleted profile leaves its stream's counts.
        gone = USERS[0]
        assert (await http.delete(f"/profile/{gone}")).status_code == 200
        del reads[gone]
        await eventually(lambda: all_events_applied(redis, 3), what="delete applied")
        assert await stored_read_counts(redis, 3) == dict(reads)


async def test_the_stream_names_are_not_user_names(settings: Settings) -> None:
    async with running_app(settings) as (http, _state):
        for user in ("events", "events:1", "events:42"):
            answer = await http.post(f"/profile/{user}", json={"a": "1"})
            assert answer.status_code == 422
            assert "is reserved" in answer.json()["message"]
        assert (await http.post("/profile/events:x", json={"a": "1"})).status_code == 201


async def test_another_number_of_streams_is_refused_until_the_events_are_moved(
    settings: Settings, redis: RedisCluster, admin: RedisStore
) -> None:
    reads: Counter[str] = Counter()
    async with running_app(settings) as (http, _state):
        for user in USERS:
            await http.post(f"/profile/{user}", json={"n": user})
        await read_profiles(http, reads, rounds=3)
        await eventually(lambda: all_events_applied(redis), what="events applied")
    # Events written and not yet applied when the service stopped are applied by the move.
    generation = str(await redis.get(keys.companion_key(USERS[1], "generation")))
    await redis.xadd(
        keys.EVENTS_STREAM, {"user": USERS[1], "type": "read", "generation": generation}
    )
    reads[USERS[1]] += 1
    await redis.hset(keys.generations(keys.EVENTS_STREAM), "ghost", "1:1")
    # A count without a register entry (an older version's, or the seeds' aggregator's).
    legacy = next(f"legacy-{n}" for n in range(100) if keys.stream_index(f"legacy-{n}", 3) == 2)
    await redis.zadd(keys.READ_COUNTS, {legacy: 5})
    reads[legacy] = 5

    three = with_profiles(settings, event_streams=3)
    with pytest.raises(StartupRefused, match="python -m app profiles event-streams 3"):
        async with running_app(three):
            pass

    said: list[str] = []
    moved = await change_event_streams(admin, 3, say=said.append, quiet_ms=0)
    assert moved.events_applied == 1
    assert moved.users_moved > 0
    assert said[-1].startswith("the profile events are now spread over 3 stream(s)")
    assert await redis.get(keys.STREAMS_LAYOUT) == "3"
    assert await stored_read_counts(redis, 3) == dict(reads)
    assert await redis.zscore(keys.read_counts(keys.event_stream(2)), legacy) == 5
    assert await redis.zscore(keys.READ_COUNTS, legacy) is None
    for stream in keys.event_streams(3):
        register: list[str] = await redis.hkeys(keys.generations(stream))  # type: ignore[assignment]
        assert all(keys.stream_of(user, 3) == stream for user in register)

    async with running_app(three) as (http, _state):
        await read_profiles(http, reads, rounds=2)
        await eventually(lambda: all_events_applied(redis, 3), what="events applied")
        assert await stored_read_counts(redis, 3) == dict(reads)
        assert (await http.get("/reporting/profileStats/5")).json() == {"results": top(reads, 5)}
    # Down to two: the third stream's users move, the stream and its keys go.
    await change_event_streams(admin, 2, say=said.append, quiet_ms=0)
    assert await stored_read_counts(redis, 2) == dict(reads)
    third = keys.event_stream(2)
    assert not await redis.exists(
        third, keys.read_counts(third), keys.generations(third), keys.deleted(third)
    )
    # Run again: nothing to do.
    await change_event_streams(admin, 2, say=said.append, quiet_ms=0)
    assert said[-1].endswith("nothing to do")


async def test_an_interrupted_move_is_refused_at_start_and_finished_by_running_it_again(
    settings: Settings, redis: RedisCluster, admin: RedisStore
) -> None:
    reads: Counter[str] = Counter()
    async with running_app(settings) as (http, _state):
        for user in USERS:
            await http.post(f"/profile/{user}", json={"n": user})
        await read_profiles(http, reads, rounds=2)
        await eventually(lambda: all_events_applied(redis), what="events applied")
    # As if the move to 4 streams died half-way: marked, some users copied, none removed.
    await redis.set(keys.STREAMS_LAYOUT, "migrating 1 4")
    copied = [user for user in USERS[:20] if keys.stream_index(user, 4) != 0]
    assert copied
    for user in copied:
        target = keys.stream_of(user, 4)
        value = await redis.hget(keys.GENERATIONS, user)
        count = await redis.zscore(keys.READ_COUNTS, user)
        assert value is not None
        assert count is not None
        await redis.hset(keys.generations(target), user, value)
        await redis.zadd(keys.read_counts(target), {user: count})
    with pytest.raises(StartupRefused, match="interrupted"):
        async with running_app(with_profiles(settings, event_streams=4)):
            pass
    with pytest.raises(LayoutChangeRefused, match="finish it first"):
        await change_event_streams(admin, 2, say=lambda _line: None, quiet_ms=0)
    await change_event_streams(admin, 4, say=lambda _line: None, quiet_ms=0)
    assert await stored_read_counts(redis, 4) == dict(reads)


async def test_the_move_is_refused_while_the_service_runs(
    settings: Settings, redis: RedisCluster, admin: RedisStore
) -> None:
    async with running_app(settings) as (http, _state):
        await http.post("/profile/ana", json={"a": "1"})
        await http.get("/profile/ana")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        with pytest.raises(LayoutChangeRefused, match="stop every process"):
            await change_event_streams(admin, 3, say=lambda _line: None)
    assert await redis.get(keys.STREAMS_LAYOUT) == "1"


async def test_retention_trims_only_what_every_group_acknowledged(
    settings: Settings, redis: RedisCluster
) -> None:
    # Another service's consumer group on the seeds' stream, reading at its own pace.
    await redis.xgroup_create(keys.EVENTS_STREAM, "audit", id="0", mkstream=True)
    settings = with_profiles(settings, events_retention_s=1)
    async with running_app(settings) as (http, _state):
        await http.post("/profile/ana", json={"a": "1"})
        for _ in range(20):
            await http.get("/profile/ana")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        await asyncio.sleep(1.5)  # older than the retention, and a few housekeeping turns
        # The audit group has read nothing: nothing is trimmed.
        assert await redis.xlen(keys.EVENTS_STREAM) == 21

        batch: Any = await redis.xreadgroup("audit", "a", {keys.EVENTS_STREAM: ">"}, count=10)
        await redis.xack(keys.EVENTS_STREAM, "audit", *(entry_id for entry_id, _ in batch[0][1]))

        async def trimmed_to(length: int) -> bool:
            return bool(await redis.xlen(keys.EVENTS_STREAM) == length)

        await eventually(lambda: trimmed_to(11), what="the acknowledged entries trimmed")
        # Read but not acknowledged: pending, so kept.
        rest: Any = await redis.xreadgroup("audit", "a", {keys.EVENTS_STREAM: ">"})
        await asyncio.sleep(0.6)
        assert await redis.xlen(keys.EVENTS_STREAM) == 11
        await redis.xack(keys.EVENTS_STREAM, "audit", *(entry_id for entry_id, _ in rest[0][1]))
        await eventually(lambda: trimmed_to(0), what="everything trimmed")
        assert await stored_read_counts(redis) == {"ana": 20}


async def test_events_younger_than_the_retention_are_kept(
    settings: Settings, redis: RedisCluster
) -> None:
    async with running_app(settings) as (http, _state):
        await http.post("/profile/ana", json={"a": "1"})
        for _ in range(5):
            await http.get("/profile/ana")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        await asyncio.sleep(0.6)  # housekeeping turns (claim_interval_s 0.2)
        assert await redis.xlen(keys.EVENTS_STREAM) == 6


async def test_deleted_profiles_are_forgotten_after_the_retention(
    settings: Settings, redis: RedisCluster
) -> None:
    settings = with_profiles(settings, events_retention_s=1)
    register, deleted = keys.GENERATIONS, keys.deleted(keys.EVENTS_STREAM)
    async with running_app(settings) as (http, _state):
        for user in ("ana", "bo"):
            await http.post(f"/profile/{user}", json={"a": "1"})
            await http.get(f"/profile/{user}")
        await http.delete("/profile/ana")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        # The ended profile's counter expires; the live one's does not.
        assert await redis.ttl(keys.companion_key("ana", "generation")) > 0
        assert await redis.ttl(keys.companion_key("bo", "generation")) == -1

        async def forgotten() -> bool:
            return await redis.hkeys(register) == ["bo"] and await redis.zcard(deleted) == 0

        await eventually(forgotten, what="ana forgotten")
        # A consumer of a host gone for longer than the retention, nothing pending: removed.
        # (A live one idle that long, nothing pending, may go too: its next read makes it
        # again, with what it is delivered.)
        group, gone_host = keys.AGGREGATOR_GROUP, "gone-host-0-aggregator-0"
        await redis.execute_command(
            "XGROUP", "CREATECONSUMER", keys.EVENTS_STREAM, group, gone_host
        )

        async def removed() -> bool:
            found = await redis.xinfo_consumers(keys.EVENTS_STREAM, group)
            return gone_host not in {consumer["name"] for consumer in found}

        await eventually(removed, what="the gone host's consumer removed")
        # A new life of ana counts from its first read, whatever was forgotten, also once her
        # ended counter expired: the new generation comes from the clock.
        await redis.delete(keys.companion_key("ana", "generation"))
        await http.post("/profile/ana", json={"a": "2"})
        await http.get("/profile/ana")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        assert await stored_read_counts(redis) == {"ana": 1, "bo": 1}


async def test_a_running_service_that_missed_a_move_stops_consuming_and_is_not_ready(
    settings: Settings, redis: RedisCluster, admin: RedisStore
) -> None:
    # An idle service passes the command's check (nothing appended or read lately): its
    # aggregator notices the new layout at its next housekeeping turn.
    async with running_app(settings) as (http, state):
        await http.post("/profile/ana", json={"a": "1"})
        await eventually(lambda: all_events_applied(redis), what="events applied")
        assert (await http.get("/readyz")).status_code == 200
        await change_event_streams(admin, 2, say=lambda _line: None, quiet_ms=0)

        async def not_ready() -> bool:
            return (await http.get("/readyz")).status_code == 503

        await eventually(not_ready, what="readiness failed")
        assert state["workers"] is not None
        assert "has stopped" in state["workers"].problem()


async def test_a_long_untrimmed_stream_is_trimmed_in_bounded_runs(
    settings: Settings, redis: RedisCluster, admin: RedisStore
) -> None:
    old = 150_000  # more than one run's TRIM_LIMIT
    for start in range(0, old, 10_000):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, start + 10_000):
            pipe.xadd(keys.EVENTS_STREAM, {"user": "ana", "type": "read"}, id=f"1-{n + 1}")
        await pipe.execute()
    await redis.xgroup_create(keys.EVENTS_STREAM, keys.AGGREGATOR_GROUP, id="$")
    await redis.xadd(keys.EVENTS_STREAM, {"user": "bo", "type": "read"})  # new: kept
    done = await apply_retention(admin, keys.EVENTS_STREAM, settings)
    assert done.trimmed == old
    assert await redis.xlen(keys.EVENTS_STREAM) == 1


def run_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APP_")}
    return subprocess.run(
        [sys.executable, "-m", "app", "profiles", "event-streams", *args],
        cwd=PROJECT_ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line(cluster: LocalCluster, redis: RedisCluster) -> None:
    refused = run_command("0", env={"REDIS_URL": cluster.url})
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        "error: the number of streams must be 1 to 64, not 0",
    )
    done = run_command("3", env={"REDIS_URL": cluster.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no profile events yet: recorded 3 stream(s)"
    assert await redis.get(keys.STREAMS_LAYOUT) == "3"
    await redis.xadd(keys.event_stream(1), {"user": "ana", "type": "read"})
    busy = run_command("1", env={"REDIS_URL": cluster.url})
    assert busy.returncode == 1
    assert busy.stderr.startswith("error: an event was appended to profile:events:1 less than")
