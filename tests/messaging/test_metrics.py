"""The messaging metrics through GET /metrics, against the real cluster: after known traffic the
queue and topic gauges and counters say exactly what happened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.domain import Context
from app.lifespan import AppState
from app.messaging import Broker, QueueCreate, channel_overview
from app.messaging.schemas import MessagePublish
from tests.conftest import eventually, running_app
from tests.messaging.test_queues import ack, make_queue, publish, receive
from tests.observability.scrape import (
    Samples,
    delta,
    label_values,
    scrape,
    series,
    value,
    with_metrics,
)

QUEUE_EVENTS = "mdb_queue_events_total"
TOPIC_EVENTS = "mdb_topic_events_total"


@pytest.fixture
async def metered(quiet_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app without workers, its Redis state read again at every scrape."""
    async with running_app(with_metrics(quiet_settings, state_cache_s=0)) as running:
        yield running


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def depth(samples: Samples, queue: str, state: str) -> float:
    return value(samples, "mdb_queue_messages", queue=queue, state=state)


async def nack(http: httpx.AsyncClient, name: str, message: dict[str, Any]) -> None:
    answer = await http.post(
        f"/queues/{name}/messages/{message['id']}/nack", json={"receipt": message["receipt"]}
    )
    assert answer.status_code == 204, answer.text


async def test_queue_depths_and_events_follow_the_traffic(
    metered: tuple[httpx.AsyncClient, AppState],
) -> None:
    http, _state = metered
    name = unique("jobs")
    await make_queue(http, name, visibility_timeout_s=30, max_deliveries=3)
    before = await scrape(http)
    ids = [await publish(http, n, name=name) for n in range(5)]
    got = await receive(http, name=name, max=2)
    assert len(got) == 2
    after = await scrape(http)
    assert [depth(after, name, s) for s in ("ready", "delayed", "inflight", "dead")] == [3, 0, 2, 0]
    assert delta(after, before, QUEUE_EVENTS, queue=name, event="published") == 5
    assert delta(after, before, QUEUE_EVENTS, queue=name, event="delivered") == 2
    # The next in line was published first: its age is how long it waited, within the test.
    age = value(after, "mdb_queue_oldest_ready_age_seconds", queue=name)
    assert 0 < age < 30

    assert await ack(http, got[0], name=name) == 204
    assert await ack(http, got[0], name=name) == 204, "a repeated ack"
    await nack(http, name, got[1])
    settled = await scrape(http)
    assert delta(settled, after, QUEUE_EVENTS, queue=name, event="acked") == 1
    assert delta(settled, after, QUEUE_EVENTS, queue=name, event="nacked") == 1
    assert [depth(settled, name, s) for s in ("ready", "inflight")] == [4, 0]
    assert value(settled, "mdb_channels_read", kind="queue") >= 1
    assert value(settled, "mdb_channels", kind="queue") >= 1

    # Label values are queue names and event names: never a message id or a receipt.
    seen = label_values(settled)
    for message in got:
        assert not any(message["id"] in v or message["receipt"] in v for v in seen)
    assert not any(message_id in v for message_id in ids for v in seen)


async def test_expiry_dead_letters_and_redrive_are_counted(
    metered: tuple[httpx.AsyncClient, AppState],
) -> None:
    http, _state = metered
    name = unique("retries")
    await make_queue(http, name, visibility_timeout_s=0.2, max_deliveries=2)
    before = await scrape(http)
    await publish(http, "x", name=name)
    assert len(await receive(http, name=name)) == 1
    await asyncio.sleep(0.4)
    # The scrape's read ends the expired lease: the message is ready again, counted expired.
    expired = await scrape(http)
    assert delta(expired, before, QUEUE_EVENTS, queue=name, event="expired") == 1
    assert [depth(expired, name, s) for s in ("ready", "inflight", "dead")] == [1, 0, 0]

    (second,) = await receive(http, name=name)
    assert second["attempt"] == 2
    await nack(http, name, second)  # its last delivery: dead-lettered
    dead = await scrape(http)
    assert delta(dead, before, QUEUE_EVENTS, queue=name, event="dead_lettered") == 1
    assert delta(dead, before, QUEUE_EVENTS, queue=name, event="nacked") == 1
    assert [depth(dead, name, s) for s in ("ready", "inflight", "dead")] == [0, 0, 1]
    assert value(dead, "mdb_queue_oldest_ready_age_seconds", queue=name) == 0

    answer = await http.post(f"/queues/{name}/dead-letters/redrive")
    assert answer.status_code == 200, answer.text
    redriven = await scrape(http)
    assert delta(redriven, before, QUEUE_EVENTS, queue=name, event="redriven") == 1
    assert [depth(redriven, name, s) for s in ("ready", "dead")] == [1, 0]


async def test_an_expired_lease_that_dead_letters_counts_both(
    metered: tuple[httpx.AsyncClient, AppState],
) -> None:
    http, _state = metered
    name = unique("once")
    await make_queue(http, name, visibility_timeout_s=0.2, max_deliveries=1)
    before = await scrape(http)
    await publish(http, "x", name=name)
    assert len(await receive(http, name=name)) == 1
    await asyncio.sleep(0.4)
    # A receive's housekeeping ends it this time, not the scrape.
    assert await receive(http, name=name) == []
    after = await scrape(http)
    assert delta(after, before, QUEUE_EVENTS, queue=name, event="expired") == 1
    assert delta(after, before, QUEUE_EVENTS, queue=name, event="dead_lettered") == 1
    assert depth(after, name, "dead") == 1


async def test_a_priority_queue_reports_its_oldest_waiting_message(
    metered: tuple[httpx.AsyncClient, AppState],
) -> None:
    http, state = metered
    name = unique("ranked")
    await make_queue(http, name, kind="priority")
    queue = state["broker"].queue(name)
    await queue.publish(MessagePublish(body="old and low", priority=0))
    await asyncio.sleep(1.2)
    await queue.publish_many([MessagePublish(body=n, priority=5) for n in range(3)])
    samples = await scrape(http)
    assert depth(samples, name, "ready") == 4
    # The next out is new, but the lowest priority's first waits longest: that is the age.
    assert 1.2 <= value(samples, "mdb_queue_oldest_ready_age_seconds", queue=name) < 30


async def test_topic_length_lag_and_pending_follow_publish_receive_and_ack(
    metered: tuple[httpx.AsyncClient, AppState],
) -> None:
    http, _state = metered
    name = unique("news")
    stream = "{topic:" + name + "}:stream"
    assert (await http.put(f"/topics/{name}", json={"max_deliveries": 1})).status_code == 201
    empty = await scrape(http)
    assert value(empty, "mdb_stream_length", stream=stream) == 0
    assert (await http.put(f"/topics/{name}/groups/billing")).status_code == 201
    for n in range(3):
        answer = await http.post(f"/topics/{name}/messages", json={"body": n})
        assert answer.status_code == 201
    published = await scrape(http)
    group = {"stream": stream, "group": "billing"}
    assert value(published, "mdb_stream_length", stream=stream) == 3
    assert value(published, "mdb_stream_group_lag", **group) == 3
    assert value(published, "mdb_stream_group_pending", **group) == 0
    assert delta(published, empty, TOPIC_EVENTS, topic=name, event="published") == 3

    answer = await http.post(f"/topics/{name}/groups/billing/receive", json={"max": 2})
    first, second = answer.json()["messages"]
    received = await scrape(http)
    assert value(received, "mdb_stream_group_lag", **group) == 1
    assert value(received, "mdb_stream_group_pending", **group) == 2
    assert value(received, "mdb_stream_group_oldest_pending_age_seconds", **group) > 0
    assert delta(received, empty, TOPIC_EVENTS, topic=name, event="delivered") == 2

    settle = f"/topics/{name}/groups/billing/messages"
    answer = await http.post(f"{settle}/{first['id']}/ack", json={"receipt": first["receipt"]})
    assert answer.status_code == 204
    answer = await http.post(f"{settle}/{second['id']}/nack", json={"receipt": second["receipt"]})
    assert answer.status_code == 204
    # Its last delivery was nacked: the next receive dead-letters it and leases the third.
    answer = await http.post(f"/topics/{name}/groups/billing/receive", json={"max": 5})
    assert len(answer.json()["messages"]) == 1
    settled = await scrape(http)
    assert value(settled, "mdb_stream_group_pending", **group) == 1
    assert value(settled, "mdb_stream_group_lag", **group) == 0
    assert delta(settled, empty, TOPIC_EVENTS, topic=name, event="acked") == 1
    assert delta(settled, empty, TOPIC_EVENTS, topic=name, event="nacked") == 1
    assert delta(settled, empty, TOPIC_EVENTS, topic=name, event="dead_lettered") == 1
    assert value(settled, "mdb_channels", kind="topic") >= 1


async def test_only_the_deepest_channels_get_series_of_their_own(
    quiet_settings: Settings,
) -> None:
    capped = with_metrics(quiet_settings, state_cache_s=0, channel_series=2)
    async with running_app(capped) as (http, state):
        broker: Broker = state["broker"]
        names = [unique(f"q{n}") for n in range(4)]
        for depth_of, name in enumerate(names, start=1):
            queue = broker.queue(name)
            await queue.create(QueueCreate())
            await queue.publish_many([MessagePublish(body=n) for n in range(depth_of)])
        topics = [unique(f"t{n}") for n in range(3)]
        for lag, topic_name in enumerate(topics, start=1):
            assert (await http.put(f"/topics/{topic_name}")).status_code == 201
            assert (await http.put(f"/topics/{topic_name}/groups/g")).status_code == 201
            for n in range(lag):
                await http.post(f"/topics/{topic_name}/messages", json={"body": n})
        samples = await scrape(http)
    queues = {s["queue"] for s in series(samples, "mdb_queue_messages")}
    assert queues == {names[3], names[2], "_other"}
    assert depth(samples, "_other", "ready") == 1 + 2
    assert depth(samples, names[3], "ready") == 4
    streams = {s["stream"] for s in series(samples, "mdb_stream_group_lag")}
    assert streams == {"{topic:" + t + "}:stream" for t in topics[1:]} | {"_other"}
    assert value(samples, "mdb_stream_group_lag", stream="_other", group="_other") == 1
    assert value(samples, "mdb_channels", kind="queue") == 4
    assert value(samples, "mdb_channels_read", kind="topic") == 3


async def test_only_the_furthest_behind_groups_of_a_topic_get_series(
    quiet_settings: Settings,
) -> None:
    capped = with_metrics(quiet_settings, state_cache_s=0, channel_series=2)
    name = unique("fan")
    stream = "{topic:" + name + "}:stream"
    async with running_app(capped) as (http, _state):
        assert (await http.put(f"/topics/{name}")).status_code == 201
        for group in ("a", "b", "c", "d"):
            assert (await http.put(f"/topics/{name}/groups/{group}")).status_code == 201
        for n in range(3):
            await http.post(f"/topics/{name}/messages", json={"body": n})
        # Each group reads a different number: lag 3, 2, 1, 0 and as many pending (3 behind
        # each: the ties go by name).
        for group, count in (("b", 1), ("c", 2), ("d", 3)):
            got = await http.post(f"/topics/{name}/groups/{group}/receive", json={"max": count})
            assert len(got.json()["messages"]) == count
        samples = await scrape(http)
    groups = {s["group"] for s in series(samples, "mdb_stream_group_lag") if s["stream"] == stream}
    assert groups == {"a", "b", "_other"}
    assert value(samples, "mdb_stream_group_lag", stream=stream, group="a") == 3
    assert value(samples, "mdb_stream_group_lag", stream=stream, group="_other") == 1 + 0
    assert value(samples, "mdb_stream_group_pending", stream=stream, group="_other") == 2 + 3
    assert value(samples, "mdb_stream_group_consumers", stream=stream, group="_other") == 2


async def test_max_channels_bounds_what_a_refresh_reads(quiet_settings: Settings) -> None:
    bounded = with_metrics(quiet_settings, state_cache_s=0, max_channels=3)
    async with running_app(bounded) as (http, state):
        for n in range(5):
            await make_queue(http, unique(f"b{n}"))
        samples = await scrape(http)
        context = Context(
            settings=bounded,
            store=state["store"],
            streams=state["streams"],
            services={Broker: state["broker"]},
        )
        page = await channel_overview(context, kind="queue", offset=1, limit=5)
    assert value(samples, "mdb_channels", kind="queue") == 5
    assert value(samples, "mdb_channels_read", kind="queue") == 3
    assert len({s["queue"] for s in series(samples, "mdb_queue_messages")}) == 3
    assert (page.total, page.read, len(page.rows)) == (5, 3, 2)


@pytest.mark.services("messaging", "videos")
async def test_the_queue_worker_path_counts_too(settings: Settings) -> None:
    """The video chunker (a queue worker) leases and acknowledges through the same counters."""
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        created = await http.post("/videos", json={"title": "metered", "duration_s": 25})
        assert created.status_code == 201, created.text
        video = created.json()["id"]

        async def chunked() -> bool:
            answer = await http.get(f"/videos/{video}")
            return bool(answer.json()["status"] == "chunked")

        await eventually(chunked, what="the chunker to finish the video")

        async def acknowledged() -> bool:
            # The worker acknowledges in batches, just after the handler marks the video.
            counts = (await http.get("/queues/video-chunking")).json()["counts"]
            return bool(counts["in_flight"] == 0)

        await eventually(acknowledged, what="the chunker to acknowledge the job")
        after = await scrape(http)
    labels = {"queue": "video-chunking"}
    assert delta(after, before, QUEUE_EVENTS, **labels, event="published") == 1
    assert delta(after, before, QUEUE_EVENTS, **labels, event="delivered") == 1
    assert delta(after, before, QUEUE_EVENTS, **labels, event="acked") == 1
    assert [depth(after, "video-chunking", s) for s in ("ready", "inflight")] == [0, 0]


async def test_a_queue_that_cannot_be_read_leaves_the_others_reported(
    metered: tuple[httpx.AsyncClient, AppState], redis: RedisCluster
) -> None:
    http, _state = metered
    good, broken = unique("fine"), unique("broken")
    for name in (good, broken):
        await make_queue(http, name)
    await publish(http, "x", name=good)
    # A key of the wrong type (written by other code) makes the broken queue's read fail.
    await redis.set("{queue:" + broken + "}:ready", "not a list")
    samples = await scrape(http)
    assert value(samples, "mdb_metrics_state_up", source="messaging") == 1
    assert depth(samples, good, "ready") == 1
    assert broken not in {labels["queue"] for labels in series(samples, "mdb_queue_messages")}
    assert (
        value(samples, "mdb_channels", kind="queue")
        - value(samples, "mdb_channels_read", kind="queue")
        >= 1
    )
