"""StreamWriter: concurrent appends are coalesced, ordered, stored, and fail together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.errors import ServiceUnavailable
from app.redis import open_store
from app.scripting import as_list
from app.slots import same_slot_key
from app.streams import APPEND_MANY, StreamWriter


@pytest.fixture
async def writer(settings: Settings) -> AsyncIterator[StreamWriter]:
    async with open_store(settings.redis, settings.redis.url) as store:
        stream_writer = StreamWriter(store)
        yield stream_writer
        await stream_writer.aclose()


async def test_concurrent_appends_are_stored_in_call_order_with_fewer_calls(
    writer: StreamWriter, redis: RedisCluster
) -> None:
    ids = await asyncio.gather(
        *(writer.append("test:stream", {"n": str(i), "kind": "x"}) for i in range(500))
    )
    assert len(set(ids)) == 500
    stored: Any = await redis.xrange("test:stream")
    assert [entry_id for entry_id, _fields in stored] == ids
    assert [fields for _id, fields in stored] == [{"n": str(i), "kind": "x"} for i in range(500)]
    assert writer.calls < 50


async def test_batches_are_bounded(settings: Settings, redis: RedisCluster) -> None:
    async with open_store(settings.redis, settings.redis.url) as store:
        small = StreamWriter(store, max_batch=10)
        await asyncio.gather(*(small.append("test:stream", {"n": str(i)}) for i in range(95)))
    assert small.calls == 10
    assert await redis.xlen("test:stream") == 95


async def test_a_failed_batch_fails_every_caller_and_the_writer_goes_on(
    writer: StreamWriter, redis: RedisCluster
) -> None:
    await redis.set("test:not-a-stream", "x")
    results = await asyncio.gather(
        *(writer.append("test:not-a-stream", {"n": str(i)}) for i in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(result, rexc.ResponseError) for result in results)
    assert "WRONGTYPE" in str(results[0])
    assert await writer.append("test:stream", {"n": "1"})
    assert await redis.xlen("test:stream") == 1


async def test_streams_are_written_independently(writer: StreamWriter, redis: RedisCluster) -> None:
    await asyncio.gather(*(writer.append(f"test:stream-{i % 3}", {"n": str(i)}) for i in range(30)))
    assert [await redis.xlen(f"test:stream-{i}") for i in range(3)] == [10, 10, 10]


async def test_a_batch_sent_twice_is_stored_once(writer: StreamWriter, redis: RedisCluster) -> None:
    marker = same_slot_key("test:stream", ":append-batch:fixed")
    args = ["60", "1", "n", "1", "2", "n", "2", "kind", "x"]
    first = await APPEND_MANY(writer.store, keys=["test:stream", marker], args=args, what="t")
    again = await APPEND_MANY(writer.store, keys=["test:stream", marker], args=args, what="t")
    assert first == again
    assert len(as_list(first)) == 2
    assert await redis.xlen("test:stream") == 2


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "mid-send"])
async def test_cancelled_flush_leaves_no_caller_waiting(
    writer: StreamWriter, started: bool
) -> None:
    calls = [asyncio.ensure_future(writer.append("test:stream", {"n": str(i)})) for i in range(50)]
    await asyncio.sleep(0)  # the callers queue their entries; the flusher is created
    for _ in range(10_000 if started else 0):
        if writer.calls:
            break
        await asyncio.sleep(0)
    assert bool(writer.calls) == started
    writer._flushers["test:stream"].cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(r, (str, asyncio.CancelledError)) for r in results)
    assert not writer._flushers


async def test_closed_writer_refuses_appends(writer: StreamWriter) -> None:
    await writer.append("test:stream", {"n": "1"})
    await writer.aclose()
    with pytest.raises(ServiceUnavailable):
        await writer.append("test:stream", {"n": "2"})


@pytest.mark.parametrize(
    "key", ["profile:events", "{orders}:events", "a{b{c}d", "x:{tag}:y", "plain", "a}b", "x{}y"]
)
async def test_same_slot_key_shares_the_slot(key: str, redis: RedisCluster) -> None:
    other = same_slot_key(key, ":marker")
    assert other != key
    assert redis.keyslot(other) == redis.keyslot(key)


async def test_an_entry_without_fields_is_refused_alone(
    writer: StreamWriter, redis: RedisCluster
) -> None:
    with pytest.raises(ValueError, match="at least one field"):
        await writer.append("test:stream", {})
    assert await writer.append("test:stream", {"n": "1"})
    assert await redis.xlen("test:stream") == 1
