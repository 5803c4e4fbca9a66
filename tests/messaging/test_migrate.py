"""Data of the first messaging layout (a hash per message, a list per trace): the service
refuses to serve it, and the migration moves it into the current layout with nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import RedisSettings, Settings
from app.local_cluster import LocalCluster
from app.messaging import keys, migrate_layout
from app.messaging.migrate import LAYOUT, LAYOUT_KEY, OldLayout
from app.messaging.schemas import MessagePublish, QueueCreate
from app.records.ids import new_ulid
from app.redis import open_store
from app.slots import slot_tag
from tests.conftest import PROJECT_ROOT, running_app, with_workers

QUEUE = "old-jobs"
PREFIX = keys.queue_prefix(QUEUE)


def event(name: str, **fields: object) -> str:
    return json.dumps({"event": name, "at": int(time.time() * 1000), "queue": QUEUE, **fields})


async def write_first_layout(redis: RedisCluster) -> tuple[str, str, str]:
    """Write a queue as the first layout kept it: one message ready, one dead-lettered, one
    acknowledged (only its trace left, expiring)."""
    slot = keys.slot_of(PREFIX)
    ready, dead, acked = (new_ulid(slot=slot) for _ in range(3))
    now = str(int(time.time() * 1000))
    await redis.hset(
        PREFIX + "config",
        mapping={"kind": "fifo", "visibility_timeout_ms": 30000, "max_deliveries": 3,
                 "created_at": now, "seq": 3},
    )  # fmt: skip
    await redis.rpush(PREFIX + "ready", ready)
    await redis.rpush(PREFIX + "dead", dead)
    common: dict[Any, Any] = {"priority": "0", "published_at": now, "dedupe_id": ""}
    await redis.hset(
        PREFIX + "msg:" + ready,
        mapping={**common, "body": '{"n":1}', "order": "0000000000000001", "attempts": "0",
                 "state": "ready"},
    )  # fmt: skip
    await redis.hset(
        PREFIX + "msg:" + dead,
        mapping={**common, "body": '{"n":2}', "order": "0000000000000002", "attempts": "3",
                 "state": "dead", "reason": "nacked on delivery 3 of 3", "dead_at": now},
    )  # fmt: skip
    tag = slot_tag(slot)
    await redis.rpush(f"{tag}:trace:{ready}", event("published", priority=0))
    await redis.rpush(f"{tag}:trace:{dead}", event("published"), event("dead-lettered"))
    await redis.rpush(f"{tag}:trace:{acked}", event("published"), event("acked"))
    await redis.expire(f"{tag}:trace:{acked}", 3600)
    await redis.zadd(keys.QUEUE_REGISTRY, {QUEUE: 1})
    return ready, dead, acked


async def test_the_first_layout_is_refused_then_migrated_with_nothing_lost(
    cluster: LocalCluster, settings: Settings, redis: RedisCluster
) -> None:
    ready, dead, acked = await write_first_layout(redis)
    quiet = with_workers(settings, enabled=False)
    with pytest.raises(OldLayout, match=r"run `python -m app messaging migrate`"):
        async with running_app(quiet):
            pass
    # The operator's step, as the cluster's admin user.
    async with open_store(RedisSettings(), cluster.url) as store:
        moved = await migrate_layout(store)
        assert (moved.messages, moved.traces) == (2, 3)
        again = await migrate_layout(store)
        assert (again.messages, again.traces) == (0, 0), "nothing moves twice"
    assert await redis.get(LAYOUT_KEY) == LAYOUT
    leftovers = {key async for key in redis.scan_iter(match="*:msg:*")}
    leftovers |= {key async for key in redis.scan_iter(match="*:trace:*")}
    assert leftovers == set()
    async with running_app(quiet) as (_http, state):
        queue = state["broker"].queue(QUEUE)
        (delivery,) = await queue.receive(consumer="c")
        assert (delivery.id, delivery.body, delivery.attempt) == (ready, {"n": 1}, 1)
        (letter,), total = await queue.dead_letters()
        assert (letter.id, letter.body, letter.attempts, total) == (dead, {"n": 2}, 3, 1)
        await queue.ack(delivery.id, delivery.receipt)
        events = [e.event for e in (await state["broker"].trace(ready)).events]
        assert events == ["published", "delivered", "acked"]
        assert [e.event for e in (await state["broker"].trace(acked)).events] == [
            "published",
            "acked",
        ]
    traces, expiry = keys.trace_keys(keys.slot_of(PREFIX))
    due_ms = await redis.zscore(expiry, acked)
    assert due_ms is not None
    assert 3000 < due_ms / 1000 - time.time() <= 3600, "the old trace keeps its time to live"
    assert await redis.hexists(traces, dead)


@pytest.mark.parametrize("older", ["2", "3"])
async def test_a_database_of_an_older_layout_is_refused_until_marked_by_the_migration(
    cluster: LocalCluster, settings: Settings, redis: RedisCluster, older: str
) -> None:
    """Layouts 2 and 3 are read as they are, but a process of those versions must be stopped
    first (layout 2's trimming reads only the pending list, layout 3 drops a receive call's
    lease-end member): the migration is the operator's mark of that."""
    quiet = with_workers(settings, enabled=False)
    async with running_app(quiet) as (_http, state):
        queue = state["broker"].queue(QUEUE)
        await queue.create(QueueCreate())
        published = await queue.publish(MessagePublish(body={"n": 1}))
    await redis.set(LAYOUT_KEY, older)
    with pytest.raises(OldLayout, match=r"stop every process of that version"):
        async with running_app(quiet):
            pass
    async with open_store(RedisSettings(), cluster.url) as store:
        moved = await migrate_layout(store)
    assert (moved.messages, moved.traces) == (0, 0)
    assert await redis.get(LAYOUT_KEY) == LAYOUT == "4"
    async with running_app(quiet) as (_http, state):
        (delivery,) = await state["broker"].queue(QUEUE).receive(consumer="c")
        assert (delivery.id, delivery.body) == (published.id, {"n": 1})


async def test_a_new_database_is_marked_with_the_current_layout(
    settings: Settings, redis: RedisCluster
) -> None:
    async with running_app(with_workers(settings, enabled=False)):
        pass
    assert await redis.get(LAYOUT_KEY) == LAYOUT


def test_the_migration_command(cluster: LocalCluster) -> None:
    asyncio.run(_write_first_layout_at(cluster.url))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APP_") and k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "app", "messaging", "migrate"],
        cwd=PROJECT_ROOT,
        env={**clean, "REDIS_URL": cluster.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "moved 2 messages and 3 traces"


async def _write_first_layout_at(url: str) -> None:
    direct = RedisCluster.from_url(url, decode_responses=True)
    try:
        await write_first_layout(direct)
    finally:
        await direct.aclose()
