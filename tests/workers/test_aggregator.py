"""The aggregator worker: exact counts across crashes, redelivery, claims and shared groups."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.local_cluster import LocalCluster
from app.profiles import keys
from app.profiles.aggregator import AGGREGATOR, apply_events
from app.redis import RedisStore, open_store
from tests.conftest import (
    PROJECT_ROOT,
    all_events_applied,
    eventually,
    expected_read_counts,
    stored_read_counts,
)
from workers.consumer import StreamConsumer


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RedisStore]:
    async with open_store(settings.redis, settings.redis.url) as opened:
        yield opened


async def publish(
    redis: RedisCluster, events: list[tuple[str, str]] | list[tuple[str, str, int]]
) -> None:
    """Append (user, type) events, as the seeds' code does, or (user, type, generation) ones,
    as the profile service does."""
    pipe = redis.pipeline(transaction=False)
    for event in events:
        fields = {"user": event[0], "type": event[1]}
        if len(event) == 3:
            fields["generation"] = str(event[2])
        pipe.xadd(keys.EVENTS_STREAM, dict(fields.items()))
    await pipe.execute()


async def create_group(redis: RedisCluster) -> None:
    await redis.xgroup_create(keys.EVENTS_STREAM, keys.AGGREGATOR_GROUP, id="0", mkstream=True)


def consumer(store: RedisStore, settings: Settings, name: str, **overrides: int) -> StreamConsumer:
    worker_settings = settings.workers.model_copy(update=overrides)
    return StreamConsumer(
        store=store,
        spec=AGGREGATOR,
        stream=keys.EVENTS_STREAM,
        consumer=name,
        settings=worker_settings,
    )


class Running:
    """Run consumers as tasks for the duration of a block, then stop and await them."""

    def __init__(self, *consumers: StreamConsumer) -> None:
        self.consumers = consumers
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Running:
        self.tasks = [asyncio.create_task(c.run()) for c in self.consumers]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.consumers:
            c.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=10)


async def wait_until_exact(redis: RedisCluster) -> None:
    await eventually(lambda: all_events_applied(redis), what="every event applied")
    assert await stored_read_counts(redis) == await expected_read_counts(redis)


async def test_events_before_the_group_existed_are_counted(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await publish(redis, [("ana", "read")] * 5 + [("kofi", "read")])
    async with Running(consumer(store, settings, "w-0")):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"ana": 5, "kofi": 1}


async def test_delete_removes_the_profile_from_the_counts(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await publish(
        redis,
        [("ana", "create"), ("ana", "read"), ("bo", "read"), ("ana", "delete"), ("bo", "read")],
    )
    async with Running(consumer(store, settings, "w-0")):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"bo": 2}


async def test_crash_between_read_and_ack_is_finished_on_restart(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await create_group(redis)
    await publish(redis, [("ana", "read")] * 10)
    # The worker read a batch and died before applying it: the entries sit in its pending list.
    delivered: Any = await redis.xreadgroup(
        keys.AGGREGATOR_GROUP, "w-0", {keys.EVENTS_STREAM: ">"}, count=7
    )
    assert len(delivered[0][1]) == 7
    assert await stored_read_counts(redis) == {}

    restarted = consumer(store, settings, "w-0", claim_min_idle_ms=3_600_000)
    async with Running(restarted):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"ana": 10}
    assert restarted.stats.claimed == 0  # its own pending entries, found by name, not claimed


async def test_a_pending_event_deleted_from_the_stream_is_acknowledged_and_not_counted(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await create_group(redis)
    await publish(redis, [("ana", "read")] * 3)
    # The worker read the batch and died; meanwhile one of its events was deleted (XDEL,
    # trimming): its own pending list gives that entry back without fields.
    delivered: Any = await redis.xreadgroup(keys.AGGREGATOR_GROUP, "w-0", {keys.EVENTS_STREAM: ">"})
    await redis.xdel(keys.EVENTS_STREAM, delivered[0][1][0][0])

    restarted = consumer(store, settings, "w-0", claim_min_idle_ms=3_600_000)
    async with Running(restarted):
        await eventually(lambda: all_events_applied(redis), what="every event acknowledged")
    assert await stored_read_counts(redis) == {"ana": 2}
    assert restarted.stats.acknowledged == 3
    assert restarted.stats.lost == 1
    assert restarted.stats.errors == 0


async def test_crash_after_apply_before_the_reply_counts_once(
    store: RedisStore, redis: RedisCluster
) -> None:
    await create_group(redis)
    await publish(redis, [("ana", "read")] * 4)
    delivered: Any = await redis.xreadgroup(keys.AGGREGATOR_GROUP, "w-0", {keys.EVENTS_STREAM: ">"})
    entries = delivered[0][1]
    # The script ran but its reply was lost; redelivery runs the same batch again.
    assert await apply_events(store, keys.EVENTS_STREAM, entries) == 4
    assert await apply_events(store, keys.EVENTS_STREAM, entries) == 0
    assert await apply_events(store, keys.EVENTS_STREAM, entries[:2]) == 0
    assert await stored_read_counts(redis) == {"ana": 4}


async def test_batches_done_out_of_order_count_the_current_generation(
    store: RedisStore, redis: RedisCluster
) -> None:
    await create_group(redis)
    await publish(redis, [("ana", "create", 1), ("ana", "read", 1), ("ana", "read", 1)])
    await publish(redis, [("ana", "delete", 1)])
    early: Any = await redis.xreadgroup(keys.AGGREGATOR_GROUP, "a", {keys.EVENTS_STREAM: ">"})
    await publish(redis, [("ana", "create", 2), ("ana", "read", 2)])
    late: Any = await redis.xreadgroup(keys.AGGREGATOR_GROUP, "b", {keys.EVENTS_STREAM: ">"})

    # The later batch (re-create, read) is done first; the earlier delete cannot wipe its read.
    assert await apply_events(store, keys.EVENTS_STREAM, late[0][1]) == 2
    assert await stored_read_counts(redis) == {"ana": 1}
    assert await apply_events(store, keys.EVENTS_STREAM, early[0][1]) == 4
    assert await stored_read_counts(redis) == {"ana": 1}
    assert await stored_read_counts(redis) == await expected_read_counts(redis)


async def test_a_read_that_raced_a_delete_does_not_count_for_the_next_profile(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    # The read ran before the delete but its event reached the stream after the delete's.
    await publish(
        redis,
        [("ana", "create", 1), ("ana", "read", 1), ("ana", "delete", 1), ("ana", "read", 1)],
    )
    await publish(redis, [("ana", "create", 2)])
    async with Running(consumer(store, settings, "w-0")):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {}


async def test_a_lost_delete_event_does_not_carry_reads_into_the_next_profile(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    # The delete's event was never appended (its request died after deleting).
    await publish(redis, [("ana", "create", 1)] + [("ana", "read", 1)] * 5)
    await publish(redis, [("ana", "create", 2), ("ana", "read", 2)])
    async with Running(consumer(store, settings, "w-0")):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"ana": 1}


async def test_a_malformed_generation_neither_fails_nor_blocks_the_user(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await publish(redis, [("ana", "create", 1), ("ana", "read", 1)])
    await redis.xadd(keys.EVENTS_STREAM, {"user": "ana", "type": "read", "generation": "inf"})
    await redis.xadd(keys.EVENTS_STREAM, {"user": "ana", "type": "read", "generation": "-1"})
    await publish(redis, [("ana", "read", 1)])
    worker = consumer(store, settings, "w-0")
    async with Running(worker):
        await wait_until_exact(redis)
    assert worker.stats.errors == 0
    assert await stored_read_counts(redis) == {"ana": 4}


async def test_seed_format_events_count_in_stream_order(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await publish(
        redis,
        [
            ("ana", "create"),
            ("ana", "read"),
            ("ana", "read"),
            ("ana", "delete"),
            ("ana", "create"),
            ("ana", "read"),
            ("bo", "read"),
        ],
    )
    async with Running(consumer(store, settings, "w-0")):
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"ana": 1, "bo": 1}


async def test_entries_of_a_dead_consumer_are_claimed(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    await create_group(redis)
    await publish(redis, [("ana", "read")] * 6 + [("bo", "read")] * 3)
    await redis.xreadgroup(keys.AGGREGATOR_GROUP, "dead", {keys.EVENTS_STREAM: ">"})
    survivor = consumer(store, settings, "alive", claim_min_idle_ms=300)
    async with Running(survivor):
        await wait_until_exact(redis)
    assert survivor.stats.claimed == 9
    assert await stored_read_counts(redis) == {"ana": 6, "bo": 3}


async def test_two_workers_share_the_group_and_count_exactly(
    store: RedisStore, settings: Settings, redis: RedisCluster
) -> None:
    users = [f"user-{i}" for i in range(40)]
    await create_group(redis)
    await publish(redis, [(users[i % 40], "read") for i in range(6000)])
    first = consumer(store, settings, "w-0", batch_size=50)
    second = consumer(store, settings, "w-1", batch_size=50)
    async with Running(first, second):
        await publish(redis, [(users[i % 7], "read") for i in range(1000)])
        await wait_until_exact(redis)
    assert first.stats.delivered > 0
    assert second.stats.delivered > 0
    assert first.stats.acknowledged + second.stats.acknowledged == 7000
    assert sum((await stored_read_counts(redis)).values()) == 7000


async def test_group_lost_with_the_data_is_recreated(
    store: RedisStore, settings: Settings, redis: RedisCluster, cluster: LocalCluster
) -> None:
    worker = consumer(store, settings, "w-0")
    async with Running(worker):
        await publish(redis, [("ana", "read")])
        await wait_until_exact(redis)
        cluster.flushall()
        await publish(redis, [("bo", "read")] * 2)
        await wait_until_exact(redis)
    assert await stored_read_counts(redis) == {"bo": 2}


@pytest.mark.chaos
async def test_worker_process_killed_mid_batch_leaves_counts_exact(
    cluster: LocalCluster, redis: RedisCluster
) -> None:
    users = [f"user-{i}" for i in range(50)]
    for chunk in range(10):
        await publish(redis, [(users[(chunk * 7 + i) % 50], "read", 1) for i in range(3000)])
    await publish(
        redis,
        [
            ("user-3", "delete", 1),
            ("user-4", "delete", 1),
            ("user-3", "create", 2),
            ("user-3", "read", 2),
        ],
    )
    env = {
        **os.environ,
        "REDIS_URL": cluster.url,
        "APP_PROCESS_INDEX": "0",
        "APP_WORKERS__BATCH_SIZE": "25",
        "APP_WORKERS__CLAIM_MIN_IDLE_MS": "600000",
    }

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "workers"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def some_applied() -> bool:
        return sum((await stored_read_counts(redis)).values()) > 3000

    async def in_flight() -> int:
        pending: Any = await redis.xpending(keys.EVENTS_STREAM, keys.AGGREGATOR_GROUP)
        return int(pending["pending"])

    async def holds_entries() -> bool:
        return await in_flight() > 0

    worker = start_worker()
    try:
        await eventually(some_applied, within_s=30, what="the worker to apply some events")
        # Kill it while it holds a batch it read and has not applied (try again if the kill
        # landed between batches).
        for _attempt in range(20):
            await eventually(holds_entries, within_s=30, what="a batch in flight")
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            if await in_flight() > 0:
                break
            worker = start_worker()
        assert await in_flight() > 0, "never killed mid-batch"
        worker = start_worker()
        await eventually(lambda: all_events_applied(redis), within_s=60, what="catch-up")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    counts = await stored_read_counts(redis)
    assert counts == await expected_read_counts(redis)
    assert counts["user-3"] == 1
    assert "user-4" not in counts
    assert sum(counts.values()) == 30000 - 600 - 600 + 1
