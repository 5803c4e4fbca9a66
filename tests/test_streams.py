"""StreamWriter: concurrent appends are coalesced, ordered, stored, and fail together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.redis import RedisStore, connect
from app.streams import StreamWriter


@pytest.fixture
async def writer(settings: Settings) -> AsyncIterator[StreamWriter]:
    store: RedisStore = await connect(settings.redis, settings.redis.url)
    stream_writer = StreamWriter(store)
    yield stream_writer
    await stream_writer.aclose()
    await store.client.aclose()


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
    store = await connect(settings.redis, settings.redis.url)
    small = StreamWriter(store, max_batch=10)
    try:
        await asyncio.gather(*(small.append("test:stream", {"n": str(i)}) for i in range(95)))
    finally:
        await store.client.aclose()
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
