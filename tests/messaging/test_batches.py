"""Batches over HTTP: publish, acknowledge and give back up to 100 messages in one request, each
entry answered as its own request would have been (one bad entry does not fail the others)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from tests.conftest import data_keys

UNKNOWN_ID = "01M84AYQ5Y1HDW2C63JYZG70BW"


async def receive(http: httpx.AsyncClient, path: str, count: int) -> list[dict[str, Any]]:
    answer = await http.post(f"{path}/receive", json={"max": count})
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


async def test_a_queue_batch_publishes_each_message_and_answers_each(
    http: httpx.AsyncClient,
) -> None:
    await http.put("/queues/jobs", json={"kind": "priority"})
    messages = [{"body": {"n": n}, "priority": n % 3} for n in range(100)]
    messages[7]["dedupe_id"] = messages[8]["dedupe_id"] = "same"
    answer = await http.post("/queues/jobs/messages:batch", json={"messages": messages})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 100
    assert [r["status"] for r in results] == [201] * 8 + [200] + [201] * 91
    # The duplicate names the first message; every other id is its own.
    assert results[8]["id"] == results[7]["id"]
    assert results[8]["duplicate"] is True
    assert len({r["id"] for r in results}) == 99
    delivered = await receive(http, "/queues/jobs", 100)
    assert len(delivered) == 99
    # Higher priority first, publish order within a priority.
    expected = sorted((n for n in range(100) if n != 8), key=lambda n: (-(n % 3), n))
    assert [m["body"]["n"] for m in delivered] == expected


async def test_a_priority_on_a_fifo_queue_fails_only_its_entry(http: httpx.AsyncClient) -> None:
    await http.put("/queues/fifo")
    messages = [{"body": {"n": 0}}, {"body": {"n": 1}, "priority": 5}, {"body": {"n": 2}}]
    answer = await http.post("/queues/fifo/messages:batch", json={"messages": messages})
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 201]
    assert results[1]["id"] is None
    assert "priority" in results[1]["message"]
    assert [m["body"]["n"] for m in await receive(http, "/queues/fifo", 10)] == [0, 2]


async def test_acks_and_nacks_in_batches_answer_each_entry(http: httpx.AsyncClient) -> None:
    await http.put("/queues/work", json={"max_deliveries": 5})
    await http.post(
        "/queues/work/messages:batch", json={"messages": [{"body": n} for n in range(6)]}
    )
    leased = await receive(http, "/queues/work", 6)
    entries = [{"id": m["id"], "receipt": m["receipt"]} for m in leased]
    stale = {"id": leased[0]["id"], "receipt": leased[0]["receipt"][:-1] + "9"}
    acks = [*entries[:3], {"id": UNKNOWN_ID, "receipt": entries[0]["receipt"]}, stale]
    answer = await http.post("/queues/work/acks:batch", json={"entries": acks})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["status"], r["id"]) for r in results] == [
        (204, leased[0]["id"]),
        (204, leased[1]["id"]),
        (204, leased[2]["id"]),
        (404, UNKNOWN_ID),
        (409, leased[0]["id"]),  # acknowledged above, with the other receipt
    ]
    # Again: the same receipts answer as an ack already taken.
    again = await http.post("/queues/work/acks:batch", json={"entries": entries[:3]})
    assert [r["status"] for r in again.json()["results"]] == [204] * 3

    nacks = [{**entries[3], "delay_s": 0}, {**entries[4], "receipt": entries[5]["receipt"]}]
    answer = await http.post("/queues/work/nacks:batch", json={"entries": nacks})
    assert [r["status"] for r in answer.json()["results"]] == [204, 409]
    redelivered = await receive(http, "/queues/work", 6)
    assert [m["id"] for m in redelivered] == [leased[3]["id"]]
    info = (await http.get("/queues/work")).json()
    assert info["counts"]["in_flight"] == 3  # leased[3] again, leased[4] and leased[5]


async def test_a_topic_batch_publishes_acks_and_nacks(http: httpx.AsyncClient) -> None:
    await http.put("/topics/orders")
    await http.put("/topics/orders/groups/billing")
    messages = [{"body": {"order": n}} for n in range(50)]
    answer = await http.post("/topics/orders/messages:batch", json={"messages": messages})
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201] * 50
    leased = await receive(http, "/topics/orders/groups/billing", 50)
    assert [m["body"]["order"] for m in leased] == list(range(50))
    entries = [{"id": m["id"], "receipt": m["receipt"]} for m in leased]
    acks = [*entries[:40], {"id": UNKNOWN_ID, "receipt": entries[0]["receipt"]}]
    answer = await http.post("/topics/orders/groups/billing/acks:batch", json={"entries": acks})
    assert [r["status"] for r in answer.json()["results"]] == [204] * 40 + [404]
    nacks = [{**entry, "delay_s": 0} for entry in entries[40:]]
    answer = await http.post("/topics/orders/groups/billing/nacks:batch", json={"entries": nacks})
    assert [r["status"] for r in answer.json()["results"]] == [204] * 10
    again = await receive(http, "/topics/orders/groups/billing", 50)
    assert sorted(m["body"]["order"] for m in again) == list(range(40, 50))


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("/queues/q/messages:batch", {"messages": []}, "messages"),
        ("/queues/q/messages:batch", {"messages": [{"body": 1}] * 101}, "messages"),
        ("/queues/q/messages:batch", {"messages": [{"body": 1}, {"bdy": 2}]}, "messages.1"),
        ("/queues/q/acks:batch", {"entries": [{"id": "x", "receipt": "r"}]}, "entries.0.id"),
        ("/queues/q/nacks:batch", {"entries": [{"id": UNKNOWN_ID}]}, "entries.0.receipt"),
        ("/topics/t/messages:batch", {"messages": [{"body": 1, "priority": 1}]}, "messages.0"),
    ],
)
async def test_a_malformed_batch_is_422_whole_and_writes_nothing(
    http: httpx.AsyncClient, redis: RedisCluster, path: str, body: dict[str, Any], names: str
) -> None:
    await http.put("/queues/q")
    await http.put("/topics/t")
    before = await data_keys(redis)
    answer = await http.post(path, json=body)
    assert answer.status_code == 422
    assert names in answer.json()["message"]
    assert await data_keys(redis) == before


async def test_batches_to_a_missing_channel_are_404(http: httpx.AsyncClient) -> None:
    entry = {"id": UNKNOWN_ID, "receipt": "abc.1"}
    for path, body in (
        ("/queues/nope/messages:batch", {"messages": [{"body": 1}]}),
        ("/queues/nope/acks:batch", {"entries": [entry]}),
        ("/queues/nope/nacks:batch", {"entries": [entry]}),
        ("/topics/nope/messages:batch", {"messages": [{"body": 1}]}),
        ("/topics/nope/groups/g/acks:batch", {"entries": [entry]}),
        ("/topics/nope/groups/g/nacks:batch", {"entries": [entry]}),
    ):
        answer = await http.post(path, json=body)
        assert answer.status_code == 404, (path, answer.text)
