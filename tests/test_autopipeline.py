"""Commands of concurrent callers sent to each node as one pipeline (app.autopipeline).

How single commands are packed is in tests/unit/test_packing.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from app.autopipeline import AutoPipeline
from app.config import RedisSettings
from app.local_cluster import LocalCluster
from app.redis import RedisStore, open_store

# A script that keeps its node busy for a while (the server's clock, so no DEBUG command).
# Valkey's TIME stands still inside a script, so there it counts CPU time (os.clock), which
# Redis 7.0's scripts lack.
BUSY_SCRIPT = """
local has_clock, clock = pcall(function() return os.clock end)
local function now_ms()
  if has_clock then
    return clock() * 1000
  end
  local time = redis.call('TIME')
  return time[1] * 1000 + time[2] / 1000
end
local until_ms = now_ms() + tonumber(ARGV[1])
repeat until now_ms() >= until_ms
return 'done'
"""


@pytest.fixture
async def store(cluster: LocalCluster) -> AsyncIterator[RedisStore]:
    async with open_store(RedisSettings(), cluster.url) as opened:
        yield opened


def cluster_client(store: RedisStore) -> RedisCluster:
    assert isinstance(store.client, RedisCluster)
    return store.client


async def test_concurrent_calls_share_writes_and_each_gets_its_own_reply(
    store: RedisStore,
) -> None:
    keys = [f"pipelined:{i}" for i in range(300)]  # spread over every shard
    await asyncio.gather(*(store.call(k, "SET", k, f"value-{k}", what="test") for k in keys))
    batches_before, commands_before = store.pipeline.batches, store.pipeline.commands

    values = await asyncio.gather(*(store.call(k, "GET", k, what="test") for k in keys))

    assert values == [f"value-{k}" for k in keys]
    commands = store.pipeline.commands - commands_before
    batches = store.pipeline.batches - batches_before
    assert commands == len(keys)
    # One turn of the loop queued them all: one write per node (3), split at MAX_BATCH.
    assert batches <= 6


async def test_an_error_reply_fails_only_its_own_caller(store: RedisStore) -> None:
    await store.call("{tag}:text", "SET", "{tag}:text", "plain", what="test")
    await store.call("{tag}:list", "RPUSH", "{tag}:list", "a", what="test")

    replies = await asyncio.gather(
        store.call("{tag}:text", "GET", "{tag}:text", what="test"),
        store.call("{tag}:text", "LPOP", "{tag}:text", what="test"),  # WRONGTYPE
        store.call("{tag}:list", "LPOP", "{tag}:list", what="test"),
        return_exceptions=True,
    )

    assert replies[0] == "plain"
    assert isinstance(replies[1], rexc.ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert replies[2] == "a"


async def test_replies_keep_redis_py_parsing_and_binary_arguments(store: RedisStore) -> None:
    key = "{bin}:hash"
    awkward = "line\r\nbreak $5\r\n*2 ünïcödé"
    await store.call(key, "HSET", key, "text", awkward, "number", 42, "float", 1.5, what="test")
    await store.call("{bin}:raw", "SET", "{bin}:raw", b"\x00\xff\r\n", what="test")

    fields = await store.call(key, "HGETALL", key, what="test")  # a dict, as redis-py parses

    assert fields == {"text": awkward, "number": "42", "float": "1.5"}
    assert await store.call("{bin}:raw", "STRLEN", "{bin}:raw", what="test") == 4


async def test_a_bad_argument_fails_only_its_own_caller(store: RedisStore) -> None:
    await store.call("{arg}:k", "SET", "{arg}:k", "v", what="test")
    batches = store.pipeline.batches

    bad, good = await asyncio.gather(
        store.call("{arg}:k", "SET", "{arg}:k", None, what="test"),  # type: ignore[arg-type]
        store.call("{arg}:k", "GET", "{arg}:k", what="test"),
        return_exceptions=True,
    )

    assert isinstance(bad, rexc.DataError)
    assert good == "v"
    assert store.pipeline.batches == batches + 1  # they were one batch


async def test_a_reply_that_does_not_decode_fails_only_its_own_caller(store: RedisStore) -> None:
    client = cluster_client(store)
    await client.set("{dec}:binary", b"\xff\xfe")
    await client.set("{dec}:text", "v")

    replies = await asyncio.gather(
        store.call("{dec}:binary", "GET", "{dec}:binary", what="test"),
        store.call("{dec}:text", "GET", "{dec}:text", what="test"),
        store.call("{dec}:text", "STRLEN", "{dec}:text", what="test"),
        return_exceptions=True,
    )

    assert isinstance(replies[0], UnicodeDecodeError)
    assert replies[1] == "v"  # sent again on another connection
    assert replies[2] == 1
    assert await store.call("{dec}:text", "GET", "{dec}:text", what="test") == "v"


async def test_a_node_without_a_free_connection_does_not_leave_callers_waiting(
    cluster: LocalCluster,
) -> None:
    async with open_store(RedisSettings(max_connections=1), cluster.url) as store:
        await store.call("{one}:k", "SET", "{one}:k", "v", what="test")
        slow = asyncio.ensure_future(
            store.call("{one}:k", "EVAL", BUSY_SCRIPT, 1, "{one}:k", 300, what="test")
        )
        await asyncio.sleep(0.05)  # the slow batch holds the node's only connection

        # The next batch finds no connection; the retry policy waits for one.
        assert await asyncio.wait_for(store.call("{one}:k", "GET", "{one}:k", what="t"), 10) == "v"
        assert await slow == "done"


async def test_a_caller_that_stops_waiting_leaves_the_others_their_replies(
    store: RedisStore,
) -> None:
    client = cluster_client(store)
    await store.call("{busy}:k", "SET", "{busy}:k", "v", what="test")
    slow = asyncio.ensure_future(
        store.call("{busy}:k", "EVAL", BUSY_SCRIPT, 1, "{busy}:k", 300, what="test")
    )
    after = asyncio.ensure_future(store.call("{busy}:k", "GET", "{busy}:k", what="test"))
    batches = store.pipeline.batches
    await asyncio.sleep(0.05)  # both are on the wire, in one batch
    assert store.pipeline.batches == batches + 1

    slow.cancel()

    assert await after == "v"
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await client.get("{busy}:k") == "v"


async def test_a_batch_that_times_out_drops_its_connection_and_no_reply_goes_astray(
    store: RedisStore,
) -> None:
    client = cluster_client(store)
    node = client.get_node_from_key("{late}:k")
    assert node is not None
    await client.set("{late}:k", "right")
    await client.set("{late}:other", "wrong")
    pipeline = AutoPipeline(timeout_s=0.1)

    slow = pipeline.send(node, ("EVAL", BUSY_SCRIPT, 1, "{late}:other", 400))
    stuck = pipeline.send(node, ("GET", "{late}:other"))
    results = await asyncio.gather(slow, stuck, return_exceptions=True)

    assert all(isinstance(r, TimeoutError) for r in results)
    await asyncio.sleep(0.5)  # the late replies arrive on the dropped connection, if at all
    # The node's connections are taken in turn, so these reach the timed-out one too: each
    # answers its own command, never a late reply to an earlier one.
    for _ in range(10):
        assert await pipeline.send(node, ("GET", "{late}:k")) == "right"
    await pipeline.aclose()


async def test_closing_sends_what_is_queued_and_waits_for_the_replies(
    store: RedisStore,
) -> None:
    queued = [store.call(f"{{close}}:{i}", "SET", f"{{close}}:{i}", i, what="t") for i in range(5)]
    pending = asyncio.gather(*queued)
    await asyncio.sleep(0)  # the calls are queued; their batch has not left yet

    await store.pipeline.aclose()

    assert pending.done()
    assert await pending == [True] * 5


async def test_a_command_sent_now_leaves_in_its_callers_turn_or_with_the_queued_batch(
    store: RedisStore,
) -> None:
    """``now`` (a coalesced step): written in the caller's own turn instead of the next one,
    in the batch already queued for its node if there is one; its reply or error is its own."""
    node = cluster_client(store).get_node_from_key("{now}:k")
    assert node is not None
    await store.call("{now}:k", "SET", "{now}:k", "v", what="test")
    for now, sent_in_the_callers_turn in ((False, 0), (True, 1)):
        batches = store.pipeline.batches
        call = asyncio.ensure_future(store.call("{now}:k", "GET", "{now}:k", what="t", now=now))
        await asyncio.sleep(0)  # the call's first step has run
        assert store.pipeline.batches == batches + sent_in_the_callers_turn
        assert await call == "v"

    batches = store.pipeline.batches
    queued = store.pipeline.send(node, ("GET", "{now}:k"))
    joined = await store.call("{now}:k", "STRLEN", "{now}:k", what="t", now=True)
    assert (joined, await queued) == (1, "v")
    assert store.pipeline.batches == batches + 1, "one batch for both"
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        await store.call("{now}:k", "LPOP", "{now}:k", what="t", now=True)


async def test_commands_sent_now_in_one_turn_to_one_node_take_two_writes(
    store: RedisStore,
) -> None:
    """Steps of several channels on one node in one turn: the first goes at once, the others
    together in the turn's batch (not a write and a connection each)."""
    keys = [f"{{turn}}:{i}" for i in range(5)]
    batches = store.pipeline.batches
    replies = await asyncio.gather(
        *(store.call(k, "SET", k, "v", what="t", now=True) for k in keys)
    )
    assert replies == [True] * 5
    assert store.pipeline.batches == batches + 2


async def test_closing_waits_for_a_command_sent_now(store: RedisStore) -> None:
    await store.call("{slow}:k", "SET", "{slow}:k", "v", what="test")
    slow = asyncio.ensure_future(
        store.call("{slow}:k", "EVAL", BUSY_SCRIPT, 1, "{slow}:k", 300, what="test", now=True)
    )
    await asyncio.sleep(0.05)  # written, its reply not read yet

    await store.pipeline.aclose()

    assert slow.done()
    assert await slow == "done"
