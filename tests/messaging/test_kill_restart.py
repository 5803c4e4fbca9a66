"""Kill -9 the service mid-traffic and restart it: no message lost, no lease shared."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.service import Service, service

__all__ = ["service"]

MESSAGES = 300
VISIBILITY_S = 2


class Traffic:
    """Producers that retry until each message is acknowledged, consumers that ack all they get."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.published: dict[int, str] = {}
        self.acked: set[str] = set()
        self.deliveries: list[tuple[str, int]] = []
        self.stop = asyncio.Event()

    async def produce(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            n = 0
            while n < MESSAGES:
                try:
                    answer = await http.post(
                        "/queues/chaos/messages", json={"body": n, "dedupe_id": f"m{n}"}
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)  # the service is down: retry the same message
                    continue
                if answer.status_code not in (200, 201):
                    await asyncio.sleep(0.05)
                    continue
                self.published[n] = answer.json()["id"]
                n += 1
                await asyncio.sleep(0.005)

    async def consume(self, name: str) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=3) as http:
            while not self.stop.is_set():
                try:
                    answer = await http.post(
                        "/queues/chaos/receive", json={"max": 5, "wait_s": 0.5, "consumer": name}
                    )
                    leased: list[dict[str, Any]] = (
                        answer.json()["messages"] if answer.status_code == 200 else []
                    )
                    for message in leased:
                        self.deliveries.append((message["id"], message["attempt"]))
                        await self.ack(http, message)
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)

    async def ack(self, http: httpx.AsyncClient, message: dict[str, Any]) -> None:
        """Acknowledge until the answer is known: an ack whose reply was lost is sent again."""
        while True:
            try:
                settled = await http.post(
                    f"/queues/chaos/messages/{message['id']}/ack",
                    json={"receipt": message["receipt"]},
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            if settled.status_code == 204:
                self.acked.add(message["id"])
            if settled.status_code < 500:
                return
            await asyncio.sleep(0.05)


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


@pytest.mark.slow
@pytest.mark.chaos
async def test_kill_9_mid_traffic_loses_nothing_and_never_shares_a_lease(
    service: Service,
) -> None:
    # The messaging service alone, as its own ACL user on the embedded cluster (embedded.acl):
    # the restart finds the same users and passwords.
    service.env["APP_EMBEDDED__ACL"] = "true"
    service.start("--services", "messaging")
    async with httpx.AsyncClient(base_url=service.url) as http:
        created = await http.put(
            "/queues/chaos", json={"visibility_timeout_s": VISIBILITY_S, "max_deliveries": 100}
        )
        assert created.status_code == 201
    traffic = Traffic(service.url)
    tasks = [asyncio.create_task(traffic.produce())] + [
        asyncio.create_task(traffic.consume(f"consumer-{i}")) for i in range(3)
    ]
    await asyncio.sleep(1.0)
    assert traffic.published, "traffic flows before the kill"
    service.signal(signal.SIGKILL)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(service.start, "--services", "messaging")

    async def all_consumed() -> bool:
        return len(traffic.published) == MESSAGES and set(traffic.published.values()) <= (
            traffic.acked
        )

    try:
        await eventually(all_consumed, within_s=60, what="every published message to be consumed")
    finally:
        missing = set(traffic.published.values()) - traffic.acked
        print(f"published={len(traffic.published)} acked={len(traffic.acked)} missing={missing}")
    traffic.stop.set()
    await asyncio.gather(*tasks)

    ids = set(traffic.published.values())
    assert len(ids) == MESSAGES, "a retried publish (same dedupe_id) enqueued once"
    assert {message_id for message_id, _ in traffic.deliveries} == ids, "nothing else enqueued"
    assert max(Counter(traffic.deliveries).values()) == 1, "no delivery was handed out twice"
    async with httpx.AsyncClient(base_url=service.url) as http:
        counts = (await http.get("/queues/chaos")).json()["counts"]
        assert counts == {"ready": 0, "delayed": 0, "in_flight": 0, "dead_lettered": 0}
        for message_id in ids:
            events = (await http.get(f"/messages/{message_id}/trace")).json()["events"]
            kinds = [e["event"] for e in events]
            assert kinds.count("published") == 1
            assert kinds.count("acked") == 1
            delivered = [e for e in events if e["event"] == "delivered"]
            for earlier, later in itertools.pairwise(delivered):
                gap = (at(later) - at(earlier)).total_seconds()
                assert gap >= VISIBILITY_S, f"{message_id} redelivered within a valid lease"
    service.signal(signal.SIGTERM)
