"""Topics: fan-out to consumer groups over a stream, with the queues' delivery rules per group."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
from redis.asyncio.cluster import RedisCluster

from app.messaging import keys
from app.messaging.broker import Broker
from app.messaging.channel import Settlement
from app.messaging.exceptions import GroupNotFound
from app.messaging.schemas import MessageTrace, TopicCreate, TopicPublish
from app.messaging.topics import TOPIC_SCRIPT
from app.scripting import as_list
from tests.conftest import data_keys
from tests.messaging import trace_due_ms

STREAM = "{topic:news}:stream"


async def setup_topic(http: httpx.AsyncClient, *groups: str, **rules: Any) -> None:
    assert (await http.put("/topics/news", json=rules)).status_code == 201
    for group in groups:
        assert (await http.put(f"/topics/news/groups/{group}")).status_code == 201


async def publish(http: httpx.AsyncClient, body: Any) -> str:
    answer = await http.post("/topics/news/messages", json={"body": body})
    assert answer.status_code == 201, answer.text
    message_id: str = answer.json()["id"]
    return message_id


async def receive(http: httpx.AsyncClient, group: str, **asked: Any) -> list[dict[str, Any]]:
    answer = await http.post(f"/topics/news/groups/{group}/receive", json=asked)
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


async def settle(
    http: httpx.AsyncClient, group: str, message: dict[str, Any], step: str = "ack", **extra: Any
) -> httpx.Response:
    return await http.post(
        f"/topics/news/groups/{group}/messages/{message['id']}/{step}",
        json={"receipt": message["receipt"], **extra},
    )


async def test_every_group_gets_every_message(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "billing", "search")
    ids = [await publish(http, {"n": n}) for n in range(4)]
    for group in ("billing", "search"):
        got = await receive(http, group, max=10, consumer=f"{group}-1")
        assert [m["id"] for m in got] == ids
        assert [m["body"] for m in got] == [{"n": n} for n in range(4)]
        assert [(await settle(http, group, m)).status_code for m in got] == [204] * 4


async def test_consumers_of_one_group_split_the_messages(broker: Broker) -> None:
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("workers")
    published = await topic.publish_many([TopicPublish(body=n) for n in range(200)])
    received: Counter[str] = Counter()

    async def consume(name: str) -> None:
        while got := await topic.receive("workers", consumer=name, limit=9):
            received.update(d.id for d in got)
            assert set(await topic.ack_many("workers", [(d.id, d.receipt) for d in got])) == {1}

    await asyncio.gather(*(consume(f"c{i}") for i in range(5)))
    assert set(received) == {p.id for p in published}
    assert set(received.values()) == {1}


async def test_unknown_topic_and_group_are_404(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    assert (await http.post("/topics/news/messages", json={"body": 1})).status_code == 404
    assert (await http.put("/topics/news/groups/g")).status_code == 404
    assert (await http.get("/topics/news")).status_code == 404
    assert await data_keys(redis) == set()
    await setup_topic(http)
    missing = await http.post("/topics/news/groups/nope/receive", json={})
    assert missing.status_code == 404
    assert "Group nope not found on topic news" in missing.json()["message"]
    assert (await http.put("/topics/news/groups/g")).status_code == 201
    assert (await http.put("/topics/news/groups/g")).status_code == 200


async def test_lease_expiry_redelivers_within_the_group_only(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a", "b", visibility_timeout_s=1.5, max_deliveries=5)
    message_id = await publish(http, "x")
    (first,) = await receive(http, "a", consumer="a1")
    (in_b,) = await receive(http, "b", consumer="b1")
    assert (await settle(http, "b", in_b)).status_code == 204
    assert await receive(http, "a", consumer="a2") == [], "the lease holds"
    await asyncio.sleep(1.6)
    (second,) = await receive(http, "a", consumer="a2")
    assert (second["id"], second["attempt"]) == (message_id, 2)
    stale = await settle(http, "a", first)
    assert stale.status_code == 409
    assert (await settle(http, "a", second)).status_code == 204
    assert (await settle(http, "a", second)).status_code == 204, "a repeated ack is the same"
    assert await receive(http, "b") == [], "group b acknowledged it and is not affected"


async def test_dead_letter_per_group_after_max_deliveries(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a", "b", visibility_timeout_s=0.2, max_deliveries=2)
    message_id = await publish(http, {"bad": True})
    for _ in range(2):
        assert len(await receive(http, "a", consumer="a1")) == 1
        await asyncio.sleep(0.25)
    assert await receive(http, "a") == []
    page = (await http.get("/topics/news/groups/a/dead-letters")).json()
    assert page["total"] == 1
    (letter,) = page["dead_letters"]
    assert (letter["id"], letter["body"], letter["attempts"]) == (message_id, {"bad": True}, 2)
    assert letter["reason"] == "lease expired on delivery 2 of 2"
    (in_b,) = await receive(http, "b")
    assert in_b["attempt"] == 1, "another group's deliveries are its own"
    info = (await http.get("/topics/news")).json()
    assert {g["name"]: g["dead_lettered"] for g in info["groups"]} == {"a": 1, "b": 0}


async def test_nack_redelivers_after_its_delay(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a", visibility_timeout_s=0.1, max_deliveries=3)
    await publish(http, 1)
    (got,) = await receive(http, "a")
    assert (await settle(http, "a", got, "nack", delay_s=1.5)).status_code == 204
    assert (await settle(http, "a", got)).status_code == 409, "a nacked lease is over"
    await asyncio.sleep(0.2)
    assert await receive(http, "a") == [], "the delay outlasts the visibility timeout"
    await asyncio.sleep(1.4)
    (again,) = await receive(http, "a")
    assert again["attempt"] == 2
    trace = (await http.get(f"/messages/{got['id']}/trace")).json()["events"]
    assert [e["event"] for e in trace] == ["published", "delivered", "nacked", "delivered"]


async def test_shortening_the_timeout_does_not_cut_a_held_lease(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a", visibility_timeout_s=30)
    await publish(http, 1)
    (held,) = await receive(http, "a", consumer="first")
    assert (await http.put("/topics/news", json={"visibility_timeout_s": 0.1})).status_code == 200
    await asyncio.sleep(0.2)
    assert await receive(http, "a", consumer="second") == []
    assert (await settle(http, "a", held)).status_code == 204


async def test_a_resent_receive_answers_the_same_leases(broker: Broker) -> None:
    topic = broker.topic("news")
    await topic.create(TopicCreate(max_deliveries=1))
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(3)])
    args = ["receive", "news", "60", "g", "c", "2", "nonce-1"]
    declared = [*keys.topic_keys("news"), *keys.group_keys("news", "g")]
    declared.append(topic.marker("receive", "g:nonce-1"))
    first = await TOPIC_SCRIPT(broker.store, keys=declared, args=args, what="t")
    again = await TOPIC_SCRIPT(broker.store, keys=declared, args=args, what="t")
    assert again == first
    assert len(as_list(as_list(first)[1])) == 2 * 6, "two deliveries of six values"
    rest = await topic.receive("g", consumer="c", limit=5)
    assert [d.body for d in rest] == [2], "the re-send leased nothing more"


async def test_receipts_are_per_delivery_and_bad_ones_are_409(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a")
    for n in range(2):
        await publish(http, n)
    first, second = await receive(http, "a", max=2)
    swapped = {**second, "receipt": first["receipt"]}
    assert (await settle(http, "a", swapped)).status_code == 409
    for receipt, status in [("99999999999999999999999-0|1|c", 409), ("", 422), ("x" * 256, 409)]:
        answer = await settle(http, "a", {**first, "receipt": receipt})
        assert answer.status_code == status, answer.text
    assert (await settle(http, "a", first)).status_code == 204
    assert (await settle(http, "a", second)).status_code == 204


async def test_a_rejected_ack_writes_nothing(http: httpx.AsyncClient, redis: RedisCluster) -> None:
    await setup_topic(http, "a", "b", visibility_timeout_s=0.1, max_deliveries=1)
    await publish(http, 1)
    (in_a,) = await receive(http, "a")
    await receive(http, "b")
    await asyncio.sleep(0.15)
    assert await receive(http, "b") == [], "dead-lettered in b"
    assert await redis.xlen(STREAM) == 1, "a still holds it"
    wrong = await settle(http, "a", {**in_a, "receipt": "wrong"})
    assert wrong.status_code == 409
    assert await redis.xlen(STREAM) == 1
    # Expired but not taken by anyone since: the ack still counts, as for queues.
    assert (await settle(http, "a", in_a)).status_code == 204
    assert await redis.xlen(STREAM) == 0, "done in both groups: trimmed"


async def test_dead_letter_offsets_are_bounded(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "a")
    answer = await http.get("/topics/news/groups/a/dead-letters", params={"offset": 10**17})
    assert answer.status_code == 422


async def test_trimming_keeps_every_entry_a_group_has_not_acknowledged(
    http: httpx.AsyncClient, broker: Broker, redis: RedisCluster
) -> None:
    await setup_topic(http, "fast", "slow")
    topic = broker.topic("news")
    await topic.publish_many([TopicPublish(body=n) for n in range(50)])
    fast = await topic.receive("fast", consumer="f", limit=50)
    await topic.ack_many("fast", [(d.id, d.receipt) for d in fast])
    assert await redis.xlen(STREAM) == 50, "slow has delivered nothing yet"
    slow = await topic.receive("slow", consumer="s", limit=20)
    assert await redis.xlen(STREAM) == 50
    pending: Any = await redis.xpending(STREAM, "slow")
    assert pending["pending"] == 0, "the group's own records hold them, not the pending list"
    await topic.ack_many("slow", [(d.id, d.receipt) for d in slow[5:]])
    assert await redis.xlen(STREAM) == 50, "the first five are still pending in slow"
    await topic.ack_many("slow", [(d.id, d.receipt) for d in slow[:5]])
    assert await redis.xlen(STREAM) == 30, "acknowledged by both groups: trimmed"
    rest = await topic.receive("slow", consumer="s", limit=50)
    assert [d.body for d in rest] == list(range(20, 50)), "nothing unacknowledged was lost"
    await topic.ack_many("slow", [(d.id, d.receipt) for d in rest])
    assert await redis.xlen(STREAM) == 0


async def test_a_group_can_start_from_the_latest_message(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "early")
    await publish(http, "old")
    late = await http.put("/topics/news/groups/late", json={"start": "latest"})
    assert late.status_code == 201
    await publish(http, "new")
    assert [m["body"] for m in await receive(http, "late")] == ["new"]
    assert [m["body"] for m in await receive(http, "early")] == ["old", "new"]


async def test_topic_dedupe(http: httpx.AsyncClient) -> None:
    await setup_topic(http, "g")
    answers = await asyncio.gather(
        *(
            http.post("/topics/news/messages", json={"body": 1, "dedupe_id": "evt-9"})
            for _ in range(10)
        )
    )
    assert Counter(a.status_code for a in answers) == {201: 1, 200: 9}
    assert len(await receive(http, "g")) == 1


async def test_a_trace_is_kept_until_every_group_is_done(
    broker: Broker, redis: RedisCluster
) -> None:
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    for group in ("a", "b"):
        await topic.create_group(group)
    published = await topic.publish(TopicPublish(body=1))
    traces = keys.message_trace_keys(published.id)[0]
    (in_a,) = await topic.receive("a", consumer="c")
    await topic.ack("a", in_a.id, in_a.receipt)
    assert await trace_due_ms(redis, published.id) is None, "b has not received it yet"
    (in_b,) = await topic.receive("b", consumer="c")
    await topic.ack("b", in_b.id, in_b.receipt)
    assert await redis.hexists(traces, published.id)
    due_ms = await trace_due_ms(redis, published.id)
    assert due_ms is not None
    assert 0 < due_ms / 1000 - time.time() <= 86400


async def test_a_receive_calls_deliveries_are_leased_and_held_together(
    broker: Broker, redis: RedisCluster
) -> None:
    """One member of the lease-ends and held sets per receive call, whatever its size; the
    group holds the call's entries until its last message is done, then trims them all."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(3)])
    leases, ends, _dead, held, calls = keys.group_keys("news", "g")
    got = await topic.receive("g", consumer="c", limit=3)
    (end_member,) = await redis.zrange(ends, 0, -1)
    assert str(end_member).startswith("@")
    assert await redis.zrange(held, 0, -1) == [end_member]
    assert await redis.hlen(leases) == 3
    await topic.ack_many("g", [(d.id, d.receipt) for d in got[:2]])
    assert await redis.xlen(STREAM) == 3, "held by the call until its last message is done"
    await topic.ack("g", got[2].id, got[2].receipt)
    assert await redis.xlen(STREAM) == 0
    for key in (leases, ends, held, calls):
        assert not await redis.exists(key), key


async def test_a_nacked_message_leaves_its_call_and_holds_its_entry_alone(
    broker: Broker, redis: RedisCluster
) -> None:
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(2)])
    _leases, ends, _dead, held, calls = keys.group_keys("news", "g")
    first, second = await topic.receive("g", consumer="c", limit=2)
    await topic.nack("g", first.id, first.receipt, delay_s=0)
    await topic.ack("g", second.id, second.receipt)
    assert await redis.zrange(ends, 0, -1) == [first.id], "the call went with its last message"
    assert await redis.zrange(held, 0, -1) == [first.id]
    assert not await redis.exists(calls)
    assert await redis.xlen(STREAM) == 2, "the nacked message holds the first entry"
    (again,) = await topic.receive("g", consumer="c")
    assert (again.id, again.attempt) == (first.id, 2)
    await topic.ack("g", again.id, again.receipt)
    assert await redis.xlen(STREAM) == 0
    assert not await redis.exists(ends, held, calls)


async def test_an_ended_call_is_delivered_again_as_far_as_a_receive_has_room(
    broker: Broker, redis: RedisCluster
) -> None:
    """A receive smaller than an ended call takes what it can; the rest of the call's leases
    get members of their own and go to the next receives, none lost or given twice."""
    topic = broker.topic("news")
    await topic.create(TopicCreate(visibility_timeout_s=0.2))
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(3)])
    _leases, ends, _dead, held, _calls = keys.group_keys("news", "g")
    first = await topic.receive("g", consumer="c", limit=3)
    await asyncio.sleep(0.3)
    (one,) = await topic.receive("g", consumer="c", limit=1)
    assert one.attempt == 2
    rest = {d.id for d in first} - {one.id}
    members = set(await redis.zrange(ends, 0, -1))
    assert rest <= members, "the two the receive had no room for have members of their own"
    assert set(await redis.zrange(held, 0, -1)) == members
    others = await topic.receive("g", consumer="c", limit=10)
    assert {d.id for d in others} == rest
    assert all(d.attempt == 2 for d in others)
    await topic.ack_many("g", [(d.id, d.receipt) for d in [one, *others]])
    assert await redis.xlen(STREAM) == 0
    assert not await redis.exists(ends, held)


async def test_a_trace_another_group_may_still_need_waits_for_trimming(
    broker: Broker, redis: RedisCluster
) -> None:
    """A group that finishes a message within another group's holds cannot tell whether that
    group still needs it: the trace waits until trimming drops the entry, then expires."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    for group in ("a", "b"):
        await topic.create_group(group)
    first, second = await topic.publish_many([TopicPublish(body=n) for n in range(2)])
    waiting = keys.topic_keys("news")[-1]
    a1, a2 = await topic.receive("a", consumer="c", limit=2)
    b1, b2 = await topic.receive("b", consumer="c", limit=2)
    await topic.ack("a", a2.id, a2.receipt)
    await topic.ack("b", b2.id, b2.receipt)
    assert await trace_due_ms(redis, second.id) is None, "a holds an older one: b cannot tell"
    assert await redis.zscore(waiting, second.id) is not None
    await topic.ack("a", a1.id, a1.receipt)
    assert await trace_due_ms(redis, first.id) is None, "b still holds it"
    await topic.ack("b", b1.id, b1.receipt)
    for message in (first, second):
        assert await trace_due_ms(redis, message.id) is not None
    assert await redis.zcard(waiting) == 0
    assert await redis.xlen(STREAM) == 0


async def test_leases_stored_as_json_by_an_earlier_version_are_still_served(
    broker: Broker, redis: RedisCluster
) -> None:
    """An upgrade with leases held: lease records written as JSON (before the MessagePack
    records) are acknowledged, and a nacked one delivered again, as before."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(2)])
    first, second = await topic.receive("g", consumer="old-worker", limit=10)
    stream: Any = await redis.xrange("{topic:news}:stream", "-", "+")
    entries = {fields["id"]: entry for entry, fields in stream}
    leases, ends = keys.group_keys("news", "g")[:2]
    held = {"e": entries[first.id], "r": "old.1", "c": "old-worker", "n": 1}
    nacked = {"e": entries[second.id], "r": "", "c": "old-worker", "n": 1, "k": True}
    await redis.hset(leases, mapping={first.id: json.dumps(held), second.id: json.dumps(nacked)})
    await redis.zadd(ends, {second.id: 0})

    (again,) = await topic.receive("g", consumer="new-worker", limit=10)
    assert (again.id, again.body, again.attempt) == (second.id, 1, 2)
    assert await topic.ack_many("g", [(first.id, "old.1"), (again.id, again.receipt)]) == [
        Settlement.DONE,
        Settlement.DONE,
    ]
    assert await redis.hlen(leases) == 0


async def test_entries_an_earlier_version_left_pending_are_kept_until_acknowledged(
    broker: Broker, redis: RedisCluster
) -> None:
    """An upgrade with entries in a group's pending list (delivered before groups read with
    NOACK): trimming keeps them until the group acknowledges them, which takes them off it."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("g")
    published = await topic.publish_many([TopicPublish(body=n) for n in range(3)])
    # As the earlier version leased: XREADGROUP without NOACK, then a lease record each.
    reply: Any = await redis.xreadgroup("g", "leases", {STREAM: ">"}, count=2)
    (_stream, read), *_ = reply
    leases, ends = keys.group_keys("news", "g")[:2]
    for n, (entry, _fields) in enumerate(read, start=1):
        lease = {"e": entry, "r": f"old.{n}", "c": "old-worker", "n": 1}
        await redis.hset(leases, published[n - 1].id, json.dumps(lease))
        await redis.zadd(ends, {published[n - 1].id: time.time() * 1000 + 60_000})

    (third,) = await topic.receive("g", consumer="new-worker", limit=10)
    assert third.body == 2
    await topic.ack("g", third.id, third.receipt)
    assert await redis.xlen(STREAM) == 3, "the first two are still pending"
    await topic.ack("g", published[0].id, "old.1")
    assert await redis.xlen(STREAM) == 2
    pending: Any = await redis.xpending(STREAM, "g")
    assert pending["pending"] == 1
    await topic.ack("g", published[1].id, "old.2")
    assert await redis.xlen(STREAM) == 0
    pending = await redis.xpending(STREAM, "g")
    assert pending["pending"] == 0
    assert await redis.hlen(leases) == 0


async def test_a_trace_shows_each_groups_delivery_in_flight_in_time_order(
    broker: Broker, redis: RedisCluster
) -> None:
    """A delivery's line is written when it ends; meanwhile reading the trace adds it from the
    group's lease, and the trace reads in time order whichever group finished first."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    for group in ("a", "b"):
        await topic.create_group(group)
    published = await topic.publish(TopicPublish(body=1))
    traces = keys.message_trace_keys(published.id)[0]
    (in_a,) = await topic.receive("a", consumer="ca")
    await asyncio.sleep(0.01)
    (in_b,) = await topic.receive("b", consumer="cb")
    assert "delivered" not in str(await redis.hget(traces, published.id))

    def shown(trace: MessageTrace) -> list[tuple[str, Any]]:
        return [(e.event, e.group) for e in trace.events]

    both = [("published", None), ("delivered", "a"), ("delivered", "b")]
    assert shown(await broker.trace(published.id)) == both
    await asyncio.sleep(0.01)
    await topic.ack("b", in_b.id, in_b.receipt)
    assert shown(await broker.trace(published.id)) == [*both, ("acked", "b")]
    await topic.nack("a", in_a.id, in_a.receipt)
    assert shown(await broker.trace(published.id)) == [*both, ("acked", "b"), ("nacked", "a")]


async def test_concurrent_receives_and_acks_of_a_group_go_as_one_step_each(
    broker: Broker,
) -> None:
    """As for queues: each caller its own messages and outcomes; a missing group refuses each."""
    topic = broker.topic("news")
    await topic.create(TopicCreate())
    await topic.create_group("g")
    await topic.publish_many([TopicPublish(body=n) for n in range(5)])
    parts = await asyncio.gather(*(topic.receive("g", consumer="c", limit=2) for _ in range(3)))
    assert [[d.body for d in part] for part in parts] == [[0, 1], [2, 3], [4]]
    deliveries = [d for part in parts for d in part]
    outcomes = await asyncio.gather(*(topic.ack_many("g", [(d.id, d.receipt)]) for d in deliveries))
    assert outcomes == [[Settlement.DONE]] * 5
    refused = await asyncio.gather(
        *(topic.receive("nobody", consumer="c", limit=1) for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(answer, GroupNotFound) for answer in refused), refused
