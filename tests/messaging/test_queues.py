"""Queues over HTTP and through the Python API, against the real cluster."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import MessagingSettings, RedisSettings, Settings
from app.local_cluster import LocalCluster
from app.messaging import keys
from app.messaging.broker import Broker
from app.messaging.exceptions import (
    PriorityOnFifoQueue,
    QueueNotFound,
    TraceNotFound,
    WrongReceipt,
)
from app.messaging.queues import QUEUE_SCRIPT, Queue
from app.messaging.schemas import MessagePublish, Published, QueueCreate
from app.redis import open_store
from app.scripting import as_list
from tests.conftest import data_keys, eventually, running_app, shard_of
from tests.messaging import trace_due_ms, trace_expiry

FAST: dict[str, Any] = {"visibility_timeout_s": 0.5, "max_deliveries": 3}


async def make_queue(http: httpx.AsyncClient, name: str = "jobs", **settings: Any) -> None:
    answer = await http.put(f"/queues/{name}", json=settings)
    assert answer.status_code == 201, answer.text


async def publish(http: httpx.AsyncClient, body: Any, name: str = "jobs", **extra: Any) -> str:
    answer = await http.post(f"/queues/{name}/messages", json={"body": body, **extra})
    assert answer.status_code == 201, answer.text
    message_id: str = answer.json()["id"]
    return message_id


async def receive(
    http: httpx.AsyncClient, name: str = "jobs", **asked: Any
) -> list[dict[str, Any]]:
    answer = await http.post(f"/queues/{name}/receive", json=asked)
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


async def ack(http: httpx.AsyncClient, message: dict[str, Any], name: str = "jobs") -> int:
    answer = await http.post(
        f"/queues/{name}/messages/{message['id']}/ack", json={"receipt": message["receipt"]}
    )
    return answer.status_code


async def counts(http: httpx.AsyncClient, name: str = "jobs") -> dict[str, int]:
    answer = await http.get(f"/queues/{name}")
    assert answer.status_code == 200, answer.text
    found: dict[str, int] = answer.json()["counts"]
    return found


async def events(http: httpx.AsyncClient, message_id: str) -> list[dict[str, Any]]:
    answer = await http.get(f"/messages/{message_id}/trace")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["events"]
    return found


async def test_create_queue_with_defaults_then_update_it(http: httpx.AsyncClient) -> None:
    created = await http.put("/queues/jobs")
    assert created.status_code == 201
    assert created.json() | {"created_at": None} == {
        "name": "jobs",
        "kind": "fifo",
        "visibility_timeout_s": 30,
        "max_deliveries": 5,
        "created_at": None,
        "counts": {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0},
    }
    updated = await http.put("/queues/jobs", json={"kind": "fifo", "max_deliveries": 9})
    assert updated.status_code == 200
    assert updated.json()["max_deliveries"] == 9


async def test_changing_a_queues_kind_is_409_and_changes_nothing(http: httpx.AsyncClient) -> None:
    await make_queue(http, kind="fifo", max_deliveries=2)
    answer = await http.put("/queues/jobs", json={"kind": "priority", "max_deliveries": 7})
    assert answer.status_code == 409
    assert "exists as a fifo queue" in answer.json()["message"]
    assert (await http.get("/queues/jobs")).json()["max_deliveries"] == 2


@pytest.mark.parametrize(
    ("queue_settings", "named"),
    [
        ({"kind": "lifo"}, "kind"),
        ({"visibility_timeout_s": -1}, "visibility_timeout_s"),
        ({"visibility_timeout_s": 0}, "visibility_timeout_s"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"max_deliveries": -3}, "max_deliveries"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_queue_settings_are_422_and_write_nothing(
    http: httpx.AsyncClient, redis: RedisCluster, queue_settings: dict[str, Any], named: str
) -> None:
    answer = await http.put("/queues/jobs", json=queue_settings)
    assert answer.status_code == 422
    assert named in answer.json()["message"]
    assert await data_keys(redis) == set()


@pytest.mark.parametrize("name", ["{jobs}", "a" * 101, "sp ace", "star*"])
async def test_bad_queue_names_are_422(http: httpx.AsyncClient, name: str) -> None:
    answer = await http.put(f"/queues/{name}")
    assert answer.status_code == 422
    assert "name" in answer.json()["message"]


async def test_unknown_queue_is_404_everywhere_and_writes_nothing(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    some_id = "01M849NDNF0PBFJDFFA0RAZ9YN"
    attempts = [
        await http.get("/queues/nope"),
        await http.post("/queues/nope/messages", json={"body": 1}),
        await http.post("/queues/nope/receive", json={}),
        await http.post(f"/queues/nope/messages/{some_id}/ack", json={"receipt": "x"}),
        await http.post(f"/queues/nope/messages/{some_id}/nack", json={"receipt": "x"}),
        await http.get("/queues/nope/dead-letters"),
        await http.post("/queues/nope/dead-letters/redrive"),
    ]
    for answer in attempts:
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"].startswith("Queue not found: nope")
    assert await data_keys(redis) == set()


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({}, "body"),
        ({"body": 1, "priority": -1}, "priority"),
        ({"body": 1, "delay_s": -0.5}, "delay_s"),
        ({"body": 1, "dedupe_id": ""}, "dedupe_id"),
        ({"body": "\ud800"}, "body"),
    ],
)
async def test_bad_messages_are_422_and_enqueue_nothing(
    http: httpx.AsyncClient, message: dict[str, Any], named: str
) -> None:
    await make_queue(http)
    # Sent escaped (as any JSON encoder may), so that a lone surrogate reaches the service.
    answer = await http.post(
        "/queues/jobs/messages",
        content=json.dumps(message),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert named in answer.json()["message"]
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0}


async def test_nan_body_is_422(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    answer = await http.post(
        "/queues/jobs/messages",
        content=b'{"body": NaN}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert (await counts(http))["ready"] == 0


async def test_priority_on_a_fifo_queue_is_409(http: httpx.AsyncClient) -> None:
    # The request is valid; the queue's kind refuses it (a conflict with its state, not 422).
    await make_queue(http, kind="fifo")
    answer = await http.post("/queues/jobs/messages", json={"body": 1, "priority": 3})
    assert answer.status_code == 409
    assert "fifo queue" in answer.json()["message"]
    assert (await counts(http))["ready"] == 0


async def test_fifo_queue_delivers_in_publish_order(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await make_queue(http)
    ids = [await publish(http, {"n": n}) for n in range(5)]
    assert await redis.llen("{queue:jobs}:ready") == 5, "a fifo queue is a Redis list"
    got = await receive(http, max=10, consumer="worker-1")
    assert [m["id"] for m in got] == ids
    assert [m["body"] for m in got] == [{"n": n} for n in range(5)]
    assert {m["attempt"] for m in got} == {1}
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 5, "dead_lettered": 0}
    assert [await ack(http, m) for m in got] == [204] * 5
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0}
    stored = [await redis.hlen("{queue:jobs}:" + part) for part in ("meta", "bodies")]
    assert stored == [0, 0], "acknowledged messages are removed"


async def test_priority_queue_delivers_higher_priority_first_fifo_within(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await make_queue(http, kind="priority")
    published = [
        (await publish(http, name, priority=priority), priority)
        for name, priority in [("a", 1), ("b", 5), ("c", 5), ("d", 0), ("e", 9), ("f", 5)]
    ]
    assert await redis.zcard("{queue:jobs}:ready") == 6, "a priority queue is a sorted set"
    got = await receive(http, max=10)
    assert [m["body"] for m in got] == ["e", "b", "c", "f", "a", "d"]
    assert {m["id"]: m["priority"] for m in got} == dict(published)


async def test_a_leased_message_goes_to_no_one_else_until_its_lease_ends(
    http: httpx.AsyncClient,
) -> None:
    await make_queue(http, visibility_timeout_s=1.5)
    message_id = await publish(http, "job")
    (first,) = await receive(http, consumer="one")
    assert await receive(http, consumer="two") == []
    await asyncio.sleep(1.6)
    (second,) = await receive(http, consumer="two")
    assert (second["id"], second["attempt"]) == (message_id, 2)
    assert second["receipt"] != first["receipt"]
    stale = await http.post(
        f"/queues/jobs/messages/{message_id}/ack", json={"receipt": first["receipt"]}
    )
    assert stale.status_code == 409
    assert "receipt does not hold the current lease" in stale.json()["message"]
    assert (await counts(http))["in_flight"] == 1, "a wrong receipt changes nothing"
    assert await ack(http, second) == 204
    assert await ack(http, second) == 204, "a repeated ack (a retry) is answered the same"
    assert [e["event"] for e in await events(http, message_id)] == [
        "published",
        "delivered",
        "expired",
        "delivered",
        "acked",
    ]


async def test_unknown_message_and_malformed_id(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    unknown = await http.post(
        "/queues/jobs/messages/01M849NDNF0PBFJDFFA0RAZ9YN/ack", json={"receipt": "r"}
    )
    assert unknown.status_code == 404
    malformed = await http.post("/queues/jobs/messages/nope/ack", json={"receipt": "r"})
    assert malformed.status_code == 422
    assert "ULID" in malformed.json()["message"]
    assert (await http.get("/messages/nope/trace")).status_code == 422
    assert (await http.get("/messages/01M849NDNF0PBFJDFFA0RAZ9YN/trace")).status_code == 404


async def test_nack_with_delay_then_dead_letter_after_max_deliveries(
    http: httpx.AsyncClient,
) -> None:
    await make_queue(http, visibility_timeout_s=30, max_deliveries=2)
    message_id = await publish(http, {"video": 7})
    (first,) = await receive(http, consumer="c")
    nacked = await http.post(
        f"/queues/jobs/messages/{message_id}/nack",
        json={"receipt": first["receipt"], "delay_s": 1.5},
    )
    assert nacked.status_code == 204
    assert await counts(http) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead_lettered": 0}
    assert await receive(http) == []
    await asyncio.sleep(1.6)
    (second,) = await receive(http, consumer="c")
    assert second["attempt"] == 2
    await http.post(f"/queues/jobs/messages/{message_id}/nack", json={"receipt": second["receipt"]})
    assert await counts(http) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 1}
    page = (await http.get("/queues/jobs/dead-letters")).json()
    assert page["total"] == 1
    (letter,) = page["dead_letters"]
    assert letter["id"] == message_id
    assert letter["body"] == {"video": 7}
    assert letter["attempts"] == 2
    assert letter["reason"] == "nacked on delivery 2 of 2"


async def test_expired_leases_dead_letter_then_redrive_with_full_trace(
    http: httpx.AsyncClient,
) -> None:
    await make_queue(http, visibility_timeout_s=0.2, max_deliveries=2)
    message_id = await publish(http, "poison")
    for attempt in (1, 2):
        (got,) = await receive(http, consumer=f"c{attempt}")
        assert got["attempt"] == attempt
        await asyncio.sleep(0.25)
    assert await receive(http) == []
    letters = (await http.get("/queues/jobs/dead-letters")).json()["dead_letters"]
    assert [(d["id"], d["reason"]) for d in letters] == [
        (message_id, "lease expired on delivery 2 of 2")
    ]
    redriven = await http.post("/queues/jobs/dead-letters/redrive", json={})
    assert redriven.json() == {"redriven": 1}
    (again,) = await receive(http, consumer="c3")
    assert again["attempt"] == 1, "a redriven message gets a fresh set of deliveries"
    assert await ack(http, again) == 204
    trace = await events(http, message_id)
    assert [(e["event"], e.get("consumer"), e.get("attempt")) for e in trace] == [
        ("published", None, None),
        ("delivered", "c1", 1),
        ("expired", "c1", 1),
        ("delivered", "c2", 2),
        ("expired", "c2", 2),
        ("dead-lettered", None, None),
        ("redriven", None, None),
        ("delivered", "c3", 1),
        ("acked", "c3", 1),
    ]
    times = [e["at"] for e in trace]
    assert times == sorted(times)


async def test_redrive_a_limited_number(http: httpx.AsyncClient) -> None:
    await make_queue(http, visibility_timeout_s=30, max_deliveries=1)
    for n in range(3):
        await publish(http, n)
    for got in await receive(http, max=3):
        await http.post(f"/queues/jobs/messages/{got['id']}/nack", json={"receipt": got["receipt"]})
    assert (await counts(http))["dead_lettered"] == 3
    page = (await http.get("/queues/jobs/dead-letters", params={"limit": 2})).json()
    assert (len(page["dead_letters"]), page["total"], page["next_offset"]) == (2, 3, 2)
    assert (await http.post("/queues/jobs/dead-letters/redrive", json={"max": 2})).json() == {
        "redriven": 2
    }
    assert (await counts(http))["ready"] == 2
    assert (await counts(http))["dead_lettered"] == 1


async def test_delayed_message_becomes_visible_after_its_delay(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    message_id = await publish(http, "later", delay_s=1.5)
    assert (await counts(http))["delayed"] == 1
    assert await receive(http) == []
    started = time.monotonic()
    (got,) = await receive(http, wait_s=5)
    assert got["id"] == message_id
    assert time.monotonic() - started < 4


async def test_long_polling_returns_as_soon_as_a_message_arrives(http: httpx.AsyncClient) -> None:
    await make_queue(http)

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        await publish(http, "hello")

    started = time.monotonic()
    publisher = asyncio.create_task(publish_later())
    got = await receive(http, wait_s=5)
    await publisher
    assert [m["body"] for m in got] == ["hello"]
    assert time.monotonic() - started < 2
    started = time.monotonic()
    assert await receive(http, wait_s=0.3) == []
    assert time.monotonic() - started >= 0.3


async def test_extend_keeps_the_lease(http: httpx.AsyncClient) -> None:
    await make_queue(http, visibility_timeout_s=1.5)
    message_id = await publish(http, "long job")
    (got,) = await receive(http)
    extended = await http.post(
        f"/queues/jobs/messages/{message_id}/extend",
        json={"receipt": got["receipt"], "visibility_timeout_s": 5},
    )
    assert extended.status_code == 200
    await asyncio.sleep(1.6)
    assert await receive(http) == [], "the extended lease still holds"
    assert await ack(http, got) == 204


async def test_concurrent_retries_with_one_dedupe_id_publish_once(
    http: httpx.AsyncClient,
) -> None:
    await make_queue(http)
    answers = await asyncio.gather(
        *(
            http.post("/queues/jobs/messages", json={"body": "pay", "dedupe_id": "order-1"})
            for _ in range(30)
        )
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 1, 200: 29}
    assert len({a.json()["id"] for a in answers}) == 1
    assert all(a.json()["duplicate"] for a in answers if a.status_code == 200)
    assert (await counts(http))["ready"] == 1


async def test_dedupe_window_ends(quiet_settings: Settings) -> None:
    settings = quiet_settings.model_copy(
        update={"messaging": quiet_settings.messaging.model_copy(update={"dedupe_window_s": 1})}
    )
    async with running_app(settings) as (http, _state):
        await make_queue(http)
        first = await publish(http, "a", dedupe_id="k")
        await asyncio.sleep(1.1)
        second = await publish(http, "a", dedupe_id="k")
        assert first != second
        assert (await counts(http))["ready"] == 2


async def test_a_resent_publish_script_enqueues_once(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    args = ["publish", "jobs", "60", "1000", "100", "01M849NDNF0PBFJDFFA0RAZ9YN", '"x"']
    args += ["0", "0", "", "0"]
    for _ in range(2):  # as redis-py does after a reply lost to a timeout or failover
        await QUEUE_SCRIPT(broker.store, keys=keys.queue_keys("jobs"), args=args, what="test")
    assert (await queue.counts()).ready == 1


async def test_a_resent_receive_answers_the_same_leases(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    await queue.publish_many([MessagePublish(body=n) for n in range(3)])
    args = ["receive", "jobs", "60", "c", "2", "nonce-1", "100"]
    declared = [*keys.queue_keys("jobs"), queue.marker("receive", "nonce-1")]
    first = await QUEUE_SCRIPT(broker.store, keys=declared, args=args, what="t")
    again = await QUEUE_SCRIPT(broker.store, keys=declared, args=args, what="t")
    assert again == first
    assert len(as_list(as_list(first)[1])) == 2 * 7, "two deliveries of seven values"
    assert (await queue.counts()).ready == 1, "the re-send leased nothing more"


async def test_concurrent_consumers_never_share_a_lease(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate(visibility_timeout_s=30))
    published = await queue.publish_many([MessagePublish(body=n) for n in range(300)])
    received: Counter[str] = Counter()

    async def consume(name: str) -> None:
        while True:
            got = await queue.receive(consumer=name, limit=7)
            if not got:
                return
            for delivery in got:
                received[delivery.id] += 1
            statuses = await queue.ack_many([(d.id, d.receipt) for d in got])
            assert set(statuses) == {1}

    await asyncio.gather(*(consume(f"c{i}") for i in range(8)))
    assert set(received) == {p.id for p in published}
    assert set(received.values()) == {1}, "no message went to two consumers"


async def test_a_consumer_killed_mid_lease_only_delays_its_messages(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate(visibility_timeout_s=1.5))
    published = {p.id for p in await queue.publish_many([MessagePublish(body=n) for n in range(5)])}
    holding = asyncio.Event()

    async def doomed() -> None:
        await queue.receive(consumer="doomed", limit=5)
        holding.set()
        await asyncio.sleep(60)  # working on them... until killed

    task = asyncio.create_task(doomed())
    await holding.wait()
    task.cancel()
    assert await queue.receive(consumer="survivor", limit=5) == [], "its leases still hold"
    got = await queue.receive(consumer="survivor", limit=5, wait_s=5)
    assert {d.id for d in got} == published
    assert {d.attempt for d in got} == {2}
    with pytest.raises(WrongReceipt):
        await queue.ack(got[0].id, "stale.1")


async def test_queues_spread_over_the_shards(redis: RedisCluster) -> None:
    shards = {shard_of(redis, keys.queue_keys(f"queue-{n}")[0]) for n in range(12)}
    assert len(shards) == 3
    for n in range(12):
        assert len({shard_of(redis, key) for key in keys.queue_keys(f"queue-{n}")}) == 1


async def test_python_api_rejects_bad_names(broker: Broker) -> None:
    with pytest.raises(ValueError, match="queue names"):
        broker.queue("{bad}")
    assert isinstance(broker.queue("good.name:1"), Queue)


async def test_trace_outlives_the_message_for_its_retention(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await make_queue(http)
    message_id = await publish(http, 1)
    (got,) = await receive(http)
    traces = keys.message_trace_keys(message_id)[0]
    assert await trace_due_ms(redis, message_id) is None, "kept while the message lives"
    await ack(http, got)
    assert await redis.hexists(traces, message_id)
    due_ms = await trace_due_ms(redis, message_id)
    assert due_ms is not None
    assert 0 < due_ms / 1000 - time.time() <= 86400


async def test_a_trace_past_its_retention_is_gone_and_swept(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    await make_queue(http)
    message_id = await publish(http, 1)
    (got,) = await receive(http)
    await ack(http, got)
    assert (await http.get(f"/messages/{message_id}/trace")).status_code == 200
    traces, expiry = keys.message_trace_keys(message_id)
    found = await trace_expiry(redis, message_id)
    assert found is not None
    # As if its retention had passed: a read no longer finds it, before any sweep.
    await redis.zadd(expiry, {found[0]: (time.time() - 1) * 1000})
    answer = await http.get(f"/messages/{message_id}/trace")
    assert answer.status_code == 404
    assert await redis.hexists(traces, message_id), "not swept yet"
    await publish(http, 2)
    assert not await redis.hexists(traces, message_id), "the next publish swept it"
    assert await trace_expiry(redis, message_id) is None


async def test_traces_acknowledged_together_expire_and_are_swept_together(
    broker: Broker, redis: RedisCluster
) -> None:
    """The traces of one ack call go as one batch of the expiry set: past its time, a read
    finds none of them, and the next step that sweeps removes them all."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    kept = (await queue.publish(MessagePublish(body="kept"))).id
    (delivery,) = await queue.receive(consumer="c")
    await queue.ack(delivery.id, delivery.receipt)
    await queue.publish_many([MessagePublish(body=n) for n in range(3)])
    got = await queue.receive(consumer="c", limit=3)
    await queue.ack_many([(d.id, d.receipt) for d in got])
    ids = [d.id for d in got]
    found = await trace_expiry(redis, ids[1])
    assert found is not None
    assert found[0].split(" ") == ids, "one member for the three"
    traces, expiry = keys.message_trace_keys(kept)
    await redis.zadd(expiry, {found[0]: (time.time() - 1) * 1000})
    for message_id in ids:
        with pytest.raises(TraceNotFound):
            await broker.trace(message_id)
    assert (await broker.trace(kept)).id == kept, "another batch, not due"
    assert await redis.hexists(traces, ids[2]), "not swept yet"
    await queue.publish(MessagePublish(body="sweeps"))
    assert await redis.hmget(traces, ids) == [None, None, None]
    assert await trace_expiry(redis, ids[0]) is None
    assert await redis.hexists(traces, kept)


async def test_a_receive_calls_leases_are_kept_together_and_counted(
    broker: Broker, redis: RedisCluster
) -> None:
    """One in-flight member per receive call, gone with its last message; the in-flight count
    follows every message, and an extended lease leaves its call for a member of its own."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    await queue.publish_many([MessagePublish(body=n) for n in range(4)])
    inflight, calls = "{queue:jobs}:inflight", "{queue:jobs}:calls"
    got = await queue.receive(consumer="c", limit=4)
    (member,) = await redis.zrange(inflight, 0, -1)
    assert str(member).startswith("@")
    assert (await queue.counts()).in_flight == 4
    await queue.ack_many([(d.id, d.receipt) for d in got[:2]])
    assert await redis.zrange(inflight, 0, -1) == [member]
    await queue.extend(got[2].id, got[2].receipt, visibility_timeout_s=60)
    assert set(await redis.zrange(inflight, 0, -1)) == {member, got[2].id}
    assert (await queue.counts()).in_flight == 2
    await queue.nack(got[3].id, got[3].receipt)
    assert await redis.zrange(inflight, 0, -1) == [got[2].id], "the call went with its last"
    assert not await redis.exists(calls)
    assert (await queue.counts()).model_dump() == {
        "ready": 1,
        "delayed": 0,
        "in_flight": 1,
        "dead_lettered": 0,
    }
    await queue.ack(got[2].id, got[2].receipt)
    (again,) = await queue.receive(consumer="c")
    await queue.ack(again.id, again.receipt)
    assert (await queue.counts()).in_flight == 0
    assert not await redis.exists(inflight, calls)


async def test_a_call_whose_leases_ended_expires_as_far_as_the_housekeeping_limit_goes(
    broker: Broker, redis: RedisCluster
) -> None:
    """Past the housekeeping limit, the rest of an ended call's leases get members of their
    own and end at the next steps: each message is delivered again once, none lost."""
    small = Broker(store=broker.store, settings=MessagingSettings(housekeeping_batch=1))
    queue = small.queue("jobs")
    await queue.create(QueueCreate(visibility_timeout_s=0.2))
    await queue.publish_many([MessagePublish(body=n) for n in range(3)])
    first = await queue.receive(consumer="c", limit=3)
    await asyncio.sleep(0.3)
    counts = await queue.counts()  # the housekeeping ends one lease, the rest wait
    assert (counts.ready, counts.in_flight) == (1, 2)
    members = set(await redis.zrange("{queue:jobs}:inflight", 0, -1))
    assert len(members) == 2
    assert members < {d.id for d in first}, "members of their own"
    again = await queue.receive(consumer="c", limit=10)
    again += await queue.receive(consumer="c", limit=10)
    again += await queue.receive(consumer="c", limit=10)
    assert sorted(d.body for d in again) == [0, 1, 2]
    assert all(d.attempt == 2 for d in again)
    await queue.ack_many([(d.id, d.receipt) for d in again])
    assert (await queue.counts()).model_dump() == dict.fromkeys(
        ("ready", "delayed", "in_flight", "dead_lettered"), 0
    )


async def test_an_acknowledgement_writes_one_line_that_also_shows_its_delivery(
    broker: Broker, redis: RedisCluster
) -> None:
    """The busiest step writes one line per message: the ack's line carries when the delivery
    was made, and the trace shows that delivery as its own event."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    published = await queue.publish(MessagePublish(body=1))
    (delivery,) = await queue.receive(consumer="worker-1")
    await queue.ack(delivery.id, delivery.receipt)
    raw = await redis.hget(keys.message_trace_keys(published.id)[0], published.id)
    assert len(str(raw).split("\n")) == 2, "published, then acked"
    events = (await broker.trace(published.id)).events
    assert [(e.event, e.consumer, e.attempt) for e in events] == [
        ("published", None, None),
        ("delivered", "worker-1", 1),
        ("acked", "worker-1", 1),
    ]
    assert events[0].at <= events[1].at <= events[2].at
    assert {e.queue for e in events} == {"jobs"}


async def test_counts_show_expired_leases_as_ready(http: httpx.AsyncClient) -> None:
    await make_queue(http, **FAST)
    await publish(http, 1)
    await receive(http)
    await eventually(
        lambda: _ready_again(http), within_s=3, what="the expired lease to count as ready"
    )


async def _ready_again(http: httpx.AsyncClient) -> bool:
    return (await counts(http)) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead_lettered": 0}


async def test_a_receipt_settles_only_its_own_message(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    for n in range(2):
        await publish(http, n)
    first, second = await receive(http, max=2)
    assert first["receipt"] != second["receipt"]
    swapped = await http.post(
        f"/queues/jobs/messages/{second['id']}/ack", json={"receipt": first["receipt"]}
    )
    assert swapped.status_code == 409
    assert [await ack(http, first), await ack(http, second)] == [204, 204]


async def test_a_resent_publish_is_not_reported_as_a_duplicate(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    declared = [*keys.queue_keys("jobs"), queue.marker("dedupe", "order-7")]
    head = ["publish", "jobs", "60", "1000", "100"]
    message = ["01M849NDNF0PBFJDFFA0RAZ9YN", '"x"', "0", "0", "order-7", str(len(declared))]
    replies = [
        await QUEUE_SCRIPT(broker.store, keys=declared, args=head + message, what="test")
        for _ in range(2)
    ]
    assert replies[0] == replies[1] == [1, [["01M849NDNF0PBFJDFFA0RAZ9YN", 1]]]


async def test_a_resent_redrive_moves_nothing_more(broker: Broker) -> None:
    queue = broker.queue("jobs")
    await queue.create(QueueCreate(max_deliveries=1))
    await queue.publish_many([MessagePublish(body=n) for n in range(2)])
    for delivery in await queue.receive(consumer="c", limit=2):
        await queue.nack(delivery.id, delivery.receipt)
    args = ["redrive", "jobs", "60", "1"]
    declared = [*keys.queue_keys("jobs"), queue.marker("redrive", "n-1")]
    for _ in range(2):
        reply = await QUEUE_SCRIPT(broker.store, keys=declared, args=args, what="t")
        assert reply == [1, 1]
    counts = await queue.counts()
    assert (counts.ready, counts.dead_lettered) == (1, 1)


async def test_a_late_resent_nack_is_answered_as_the_first(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    message_id = await publish(http, 1)
    (got,) = await receive(http)
    nack = {"receipt": got["receipt"]}
    assert (
        await http.post(f"/queues/jobs/messages/{message_id}/nack", json=nack)
    ).status_code == 204
    (again,) = await receive(http)
    for _ in range(3):
        await http.post(
            f"/queues/jobs/messages/{message_id}/extend",
            json={"receipt": again["receipt"], "visibility_timeout_s": 30},
        )
    assert (
        await http.post(f"/queues/jobs/messages/{message_id}/nack", json=nack)
    ).status_code == 204
    assert (await counts(http))["in_flight"] == 1, "the repeat changed nothing"


async def test_dead_letter_offsets_are_bounded(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    answer = await http.get("/queues/jobs/dead-letters", params={"offset": 10**17})
    assert answer.status_code == 422
    assert "offset" in answer.json()["message"]


async def test_a_body_nested_too_deep_is_422(http: httpx.AsyncClient) -> None:
    await make_queue(http)
    deep: Any = "bottom"
    for _ in range(70):
        deep = [deep]
    answer = await http.post("/queues/jobs/messages", json={"body": deep})
    assert answer.status_code == 422
    assert "nest" in answer.json()["message"]
    assert (await counts(http))["ready"] == 0


async def test_message_states_stored_as_json_by_an_earlier_version_are_still_served(
    broker: Broker, redis: RedisCluster
) -> None:
    """An upgrade with messages in the queue: state records written as JSON (before the
    MessagePack records) are received, acknowledged and given back as before."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate(max_deliveries=2))
    ready, leased, nacked = await queue.publish_many(
        [MessagePublish(body=name) for name in ("ready", "leased", "nacked")]
    )
    now = int(time.time() * 1000)
    lease_end = now + 60_000

    def state(order: int, **fields: Any) -> str:
        return json.dumps({"p": 0, "o": f"{order:016d}", "a": 0, "t": now, "d": "", **fields})

    held = {"s": "inflight", "a": 1, "c": "old-worker", "l": lease_end}
    await redis.hset(
        "{queue:jobs}:meta",
        mapping={
            ready.id: state(1, s="ready"),
            leased.id: state(2, r="old.1", **held),
            nacked.id: state(3, r="old.2", **held),
        },
    )
    await redis.lrem("{queue:jobs}:ready", 0, leased.id)
    await redis.lrem("{queue:jobs}:ready", 0, nacked.id)
    await redis.zadd("{queue:jobs}:inflight", {leased.id: lease_end, nacked.id: lease_end})
    # That version kept a member per leased message, and no count of them.
    await redis.hdel("{queue:jobs}:config", "in_flight")
    # That version wrote a delivery's trace line when it was made (this one, when it ends).
    traces = keys.message_trace_keys(leased.id)[0]
    for message in (leased, nacked):
        line = {"event": "delivered", "at": now, "queue": "jobs", "consumer": "old-worker"}
        published_line: Any = await redis.hget(traces, message.id)
        await redis.hset(traces, message.id, f"{published_line}\n{json.dumps(line)}")

    (delivery,) = await queue.receive(consumer="new-worker", limit=10)
    assert (delivery.id, delivery.body, delivery.attempt) == (ready.id, "ready", 1)
    assert delivery.published_at.timestamp() * 1000 == now
    await queue.nack(nacked.id, "old.2")
    (again,) = await queue.receive(consumer="new-worker", limit=10)
    assert (again.id, again.body, again.attempt) == (nacked.id, "nacked", 2)
    settled = [(leased.id, "old.1"), (delivery.id, delivery.receipt), (again.id, again.receipt)]
    assert await queue.ack_each(settled) == [None, None, None]
    assert await queue.ack_each([(leased.id, "old.1")]) == [None], "a repeated ack"
    assert (await queue.counts()).model_dump() == dict.fromkeys(
        ("ready", "delayed", "in_flight", "dead_lettered"), 0
    )
    seen = {message.id: (await broker.trace(message.id)).events for message in (leased, nacked)}
    assert [(e.event, e.consumer) for e in seen[leased.id][1:]] == [
        ("delivered", "old-worker"),
        ("acked", "old-worker"),
    ], "the earlier version's delivery line, not written twice"
    assert [e.event for e in seen[nacked.id]] == [
        "published",
        "delivered",
        "nacked",
        "delivered",
        "acked",
    ]


async def test_a_delivery_is_traced_when_it_ends_and_shown_while_in_flight(
    http: httpx.AsyncClient, redis: RedisCluster
) -> None:
    """A receive writes no trace line: the delivery's line is written with the step that ends
    it (here an extension, then the ack), at the time the delivery was made; a trace read in
    between shows it from the message's state."""
    await make_queue(http)
    message_id = await publish(http, "x")
    traces = keys.message_trace_keys(message_id)[0]

    async def stored() -> list[str]:
        raw = await redis.hget(traces, message_id)
        return [json.loads(line)["event"] for line in str(raw).split("\n")]

    (got,) = await receive(http, consumer="c")
    assert await stored() == ["published"]
    in_flight = await events(http, message_id)
    assert [(e["event"], e.get("consumer"), e.get("attempt")) for e in in_flight] == [
        ("published", None, None),
        ("delivered", "c", 1),
    ]
    await asyncio.sleep(0.01)
    extended = await http.post(
        f"/queues/jobs/messages/{message_id}/extend",
        json={"receipt": got["receipt"], "visibility_timeout_s": 60},
    )
    assert extended.status_code == 200, extended.text
    assert await stored() == ["published", "delivered", "extended"]
    assert await ack(http, got) == 204
    done = await events(http, message_id)
    assert done[:2] == in_flight, "the line written later is the one shown in flight"
    assert [e["event"] for e in done] == ["published", "delivered", "extended", "acked"]
    assert await stored() == ["published", "delivered", "extended", "acked"]


async def _script_runs(redis: RedisCluster, key: str) -> int:
    """EVALSHA calls so far on the primary that holds ``key``."""
    node = redis.get_node_from_key(key)
    stats: Any = await redis.execute_command("INFO", "commandstats", target_nodes=node)
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_publishes_go_as_one_step_each_with_its_own_answer(
    broker: Broker, redis: RedisCluster
) -> None:
    """Publishes made in the same event-loop turn (concurrent requests) are sent together; each
    caller gets its own answer, and a refusal is only the refused caller's."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    before = await _script_runs(redis, "{queue:jobs}:meta")
    answers = await asyncio.gather(*(queue.publish(MessagePublish(body=n)) for n in range(20)))
    runs = await _script_runs(redis, "{queue:jobs}:meta") - before
    assert runs < 5, f"one step for all (besides any other step on that node), not {runs}"
    got = await queue.receive(consumer="c", limit=20)
    assert {d.id: d.body for d in got} == {answer.id: n for n, answer in enumerate(answers)}

    same = [MessagePublish(body=n, dedupe_id="once") for n in range(2)]
    first, second = await asyncio.gather(*(queue.publish(message) for message in same))
    assert (first.duplicate, second.duplicate, second.id) == (False, True, first.id)

    mixed = [MessagePublish(body=0), MessagePublish(body=1, priority=3), MessagePublish(body=2)]
    answered = await asyncio.gather(
        *(queue.publish(message) for message in mixed), return_exceptions=True
    )
    assert isinstance(answered[1], PriorityOnFifoQueue), answered
    assert all(isinstance(answer, Published) for answer in (answered[0], answered[2]))
    assert (await queue.counts()).ready == 3, "the two others and the dedupe's first"

    missing = broker.queue("missing")
    refused = await asyncio.gather(
        *(missing.publish(MessagePublish(body=n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(answer, QueueNotFound) for answer in refused), refused


async def test_concurrent_receives_and_acks_go_as_one_step_each(
    broker: Broker, redis: RedisCluster
) -> None:
    """A consumer's receives made in the same turn lease in one step, each caller getting its
    own messages (none twice); the acks of a turn settle in one step, each with its outcome."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    await queue.publish_many([MessagePublish(body=n) for n in range(10)])
    before = await _script_runs(redis, "{queue:jobs}:meta")
    parts = await asyncio.gather(*(queue.receive(consumer="c", limit=3) for _ in range(4)))
    assert await _script_runs(redis, "{queue:jobs}:meta") - before < 5
    assert [[d.body for d in part] for part in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len({d.receipt for part in parts for d in part}) == 10

    deliveries = [d for part in parts for d in part]
    before = await _script_runs(redis, "{queue:jobs}:meta")
    wrong = queue.ack(deliveries[0].id, "not-the-receipt")
    outcomes = await asyncio.gather(
        wrong, *(queue.ack(d.id, d.receipt) for d in deliveries), return_exceptions=True
    )
    assert await _script_runs(redis, "{queue:jobs}:meta") - before < 5
    assert isinstance(outcomes[0], WrongReceipt), "only the wrong receipt fails"
    assert outcomes[1:] == [None] * 10
    assert (await queue.counts()).in_flight == 0


async def test_a_turns_big_steps_go_each_alone_and_together_in_one_write(
    broker: Broker, cluster: LocalCluster
) -> None:
    """Concurrent steps too big to merge are sent each alone, in one write of the automatic
    pipeline (so the server runs them back to back); a merged step is written at once."""
    async with open_store(RedisSettings(), cluster.url) as store:  # no other process's commands
        queue = Broker(store=store, settings=MessagingSettings()).queue("jobs")
        await queue.create(QueueCreate())
        batches = store.pipeline.batches
        big = [MessagePublish(body=n) for n in range(60)]
        published = await asyncio.gather(*(queue.publish_many(big) for _ in range(3)))
        assert [len(part) for part in published] == [60, 60, 60]
        assert store.pipeline.batches == batches + 1, "three steps, one write"

        batches = store.pipeline.batches
        small = asyncio.gather(*(queue.publish(MessagePublish(body=n)) for n in range(3)))
        await asyncio.sleep(0)  # the callers have joined their turn's step
        await asyncio.sleep(0)  # the step has run: written in its own turn, not the next one
        assert store.pipeline.batches == batches + 1
        assert len(await small) == 3
    assert (await broker.queue("jobs").counts()).ready == 183


async def test_a_caller_that_gives_up_leaves_the_others_of_its_step_their_answers(
    broker: Broker,
) -> None:
    """A publisher cancelled before its turn's step leaves is left out of it; once the step is
    on its way it is stored anyway (as a request whose reply was lost). Either way the others
    of that step get their answers, and the next steps are sent as before (nothing waits on a
    step nobody sends)."""
    queue = broker.queue("jobs")
    await queue.create(QueueCreate())
    answered: list[str] = []
    for cancel_after in (0, 1, 3):  # before the step leaves, and while it is on its way
        calls = [asyncio.create_task(queue.publish(MessagePublish(body=n))) for n in range(3)]
        for _ in range(cancel_after + 1):
            await asyncio.sleep(0)
        calls[1].cancel()
        first, second, third = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(second, asyncio.CancelledError), second
        assert isinstance(first, Published), first
        assert isinstance(third, Published), third
        answered += [first.id, third.id]
    alone = await asyncio.wait_for(queue.publish(MessagePublish(body="next")), 5)
    got = await queue.receive(consumer="c", limit=20)
    assert {*answered, alone.id} <= {d.id for d in got}
    assert len(got) == 2 + 3 + 3 + 1, "the publish given up before its step left is not stored"
