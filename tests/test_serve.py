"""``python -m app serve``: the embedded cluster, restarts, kill -9 mid-load, clear failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from app.local_cluster import port_free
from app.profiles import keys
from tests.conftest import (
    PROJECT_ROOT,
    ReadTally,
    all_events_applied,
    eventually,
    expected_read_counts,
    stored_read_counts,
)
from tests.service import HOST, NODES, Service, clean_up, free_port, service

__all__ = ["service"]


@pytest.mark.slow
async def test_embedded_cluster_keeps_data_across_restarts(service: Service) -> None:
    service.start("--workers", "2")
    async with httpx.AsyncClient(base_url=service.url) as http:
        created = await http.post("/profile/ana", json={"email": "ana@example.com"})
    assert created.status_code == 201
    redis = RedisCluster.from_url(service.redis_url, decode_responses=True)

    async def consumer_slots() -> list[list[str]]:
        consumers = await redis.xinfo_consumers("profile:events", "profile-aggregator")
        return sorted(c["name"].rsplit("-", 3)[1:] for c in consumers)

    async def both_consuming() -> bool:
        return len(await consumer_slots()) == 2

    try:
        # Readiness is per process; the second one joins the group a moment later.
        await eventually(both_consuming, what="both processes in the group")
        # Two processes, each with its stable slot index in its consumer name, share the group.
        assert await consumer_slots() == [["0", "aggregator", "0"], ["1", "aggregator", "0"]]
    finally:
        await redis.aclose()
    assert service.signal(signal.SIGTERM) == 0
    assert all(port_free(HOST, service.base_port + i) for i in range(NODES)), "cluster not stopped"
    assert (service.data_dir / f"node-{service.base_port}" / "nodes.conf").exists()

    service.start()
    async with httpx.AsyncClient(base_url=service.url) as http:
        assert (await http.get("/profile/ana")).json() == {"email": "ana@example.com"}
    service.signal(signal.SIGINT)


async def read_load(
    url: str, users: list[str], answered: Counter[str], stop: asyncio.Event
) -> None:
    """Read profiles with 16 concurrent connections, counting reads answered 200, until stopped."""

    async def reader(index: int, http: httpx.AsyncClient) -> None:
        turn = index
        while not stop.is_set():
            user = users[turn % len(users)]
            turn += 7
            try:
                answer = await http.get(f"{url}/profile/{user}")
            except httpx.HTTPError:
                continue  # the service is being killed: no answer, nothing to count
            if answer.status_code == 200:
                answered[user] += 1

    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=5) as http:
        await asyncio.gather(*(reader(i, http) for i in range(16)))


@pytest.mark.slow
@pytest.mark.chaos
async def test_kill_9_mid_load_then_restart_keeps_stats_exact(service: Service) -> None:
    service.start()
    users = [f"user-{i}" for i in range(20)]
    async with httpx.AsyncClient(base_url=service.url) as http:
        for user in users:
            assert (await http.post(f"/profile/{user}", json={"name": user})).status_code == 201
        for user in users[:5]:
            await http.get(f"/profile/{user}")
            assert (await http.delete(f"/profile/{user}")).status_code == 200
    answered: Counter[str] = Counter()
    stop = asyncio.Event()
    load = asyncio.create_task(read_load(service.url, users[3:], answered, stop))
    await asyncio.sleep(2.0)
    service.signal(signal.SIGKILL)
    await asyncio.sleep(0.3)
    stop.set()
    await load
    assert sum(answered.values()) > 100

    service.start()
    redis = RedisCluster.from_url(service.redis_url, decode_responses=True)
    try:
        await eventually(lambda: all_events_applied(redis), within_s=60, what="catch-up")
        counts = await stored_read_counts(redis)
        expected = await expected_read_counts(redis)
        existing = set(users[5:])
        assert {u: n for u, n in counts.items() if u in existing} == {
            u: n for u, n in expected.items() if u in existing
        }
        for user, reads in answered.items():
            if user in existing:
                assert counts[user] >= reads, f"a read answered 200 is missing for {user}"
        assert not set(counts) & set(users[:5]), "deleted profiles are not counted"
    finally:
        await redis.aclose()
    service.signal(signal.SIGTERM)


class Audit:
    """Another consumer group on every event stream, reading as the events come and tallying
    the read counts they make (each stream in its order): with it, the counts can be checked
    exactly while the retention trims what both groups acknowledged."""

    GROUP = "audit"

    def __init__(self, redis: RedisCluster, streams: list[str]) -> None:
        self.redis = redis
        self.streams = streams
        self.tallies = {stream: ReadTally() for stream in streams}
        self.seen: set[str] = set()
        self.events = 0

    async def create(self) -> None:
        for stream in self.streams:
            await self.redis.xgroup_create(stream, self.GROUP, id="0", mkstream=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Read and acknowledge until stopped, riding out the service's kill (the nodes stay)."""
        while not stop.is_set():
            try:
                await self.read_once()
            except Exception:
                await asyncio.sleep(0.2)

    async def read_once(self) -> int:
        got = 0
        # Each stream on its own (their slots differ); what this consumer left pending first.
        for stream, start in ((s, start) for s in self.streams for start in ("0", ">")):
            reply: Any = await self.redis.xreadgroup(
                self.GROUP, "auditor", {stream: start}, count=500
            )
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    if f"{stream}/{entry_id}" not in self.seen:
                        self.seen.add(f"{stream}/{entry_id}")
                        self.tallies[stream].add(fields)
                        self.events += 1
                if entries:
                    await self.redis.xack(stream, self.GROUP, *(e[0] for e in entries))
                    got += len(entries)
        return got

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for tally in self.tallies.values():
            found |= tally.counts
        return found


@pytest.mark.slow
@pytest.mark.chaos
async def test_kill_9_with_three_streams_and_trimming_keeps_stats_exact(tmp_path: Path) -> None:
    service = Service(
        tmp_path / "redis",
        APP_PROFILES__EVENT_STREAMS="3",
        APP_PROFILES__EVENTS_RETENTION_S="3",
        APP_WORKERS__CLAIM_INTERVAL_S="0.3",
    )
    try:
        service.start()
        users = [f"user-{i}" for i in range(20)]
        redis = RedisCluster.from_url(service.redis_url, decode_responses=True)
        audit = Audit(redis, keys.event_streams(3))
        await audit.create()
        async with httpx.AsyncClient(base_url=service.url) as http:
            for user in users:
                assert (await http.post(f"/profile/{user}", json={"n": user})).status_code == 201
            for user in users[:5]:
                await http.get(f"/profile/{user}")
                assert (await http.delete(f"/profile/{user}")).status_code == 200
        answered: Counter[str] = Counter()
        stop, stop_audit = asyncio.Event(), asyncio.Event()
        auditing = asyncio.create_task(audit.run(stop_audit))
        load = asyncio.create_task(read_load(service.url, users[3:], answered, stop))
        await asyncio.sleep(2.0)
        service.signal(signal.SIGKILL)
        await asyncio.sleep(0.3)
        stop.set()
        await load
        assert sum(answered.values()) > 100

        service.start()
        await eventually(lambda: all_events_applied(redis, 3), within_s=60, what="catch-up")
        stop_audit.set()
        await auditing
        while await audit.read_once():
            pass

        async def trimmed() -> bool:
            lengths = [await redis.xlen(stream) for stream in audit.streams]
            return sum(lengths) < audit.events / 2

        await eventually(trimmed, within_s=30, what="the retention trimmed")
        counts = await stored_read_counts(redis, 3)
        existing = set(users[5:])
        assert {u: n for u, n in counts.items() if u in existing} == {
            u: n for u, n in audit.counts().items() if u in existing
        }
        for user, reads in answered.items():
            if user in existing:
                assert counts[user] >= reads, f"a read answered 200 is missing for {user}"
        assert not set(counts) & set(users[:5]), "deleted profiles are not counted"
        await redis.aclose()
        service.signal(signal.SIGTERM)
    finally:
        clean_up(service)


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APP_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_missing_redis_server_is_one_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        ["-m", "app", "serve", "--port", str(free_port())],
        {
            "APP_EMBEDDED__REDIS_SERVER": "/nonexistent/redis-server",
            "APP_EMBEDDED__DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "redis-server was not found" in last
    assert "apt-get install -y redis-server" in last
    assert "REDIS_URL" in last


def test_bad_configuration_fails_at_start_with_one_line() -> None:
    result = run_cli(["-m", "app", "serve"], {"APP_SERVER__WORKERS": "several"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: server.workers [env APP_SERVER__WORKERS]: Input should be a valid "
        "integer, unable to parse string as an integer (got 'several')"
    ]


def test_uvicorn_without_redis_url_says_what_to_do() -> None:
    result = run_cli(["-m", "uvicorn", "app.main:app", "--port", str(free_port())], {})
    assert result.returncode != 0
    assert "redis.url [env REDIS_URL] is empty" in result.stderr


@pytest.mark.slow
@pytest.mark.chaos
def test_children_stop_when_the_supervisor_is_killed(service: Service) -> None:
    service.start("--workers", "2")
    service.signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not port_free(HOST, service.http_port):
        assert time.monotonic() < deadline, "orphaned HTTP processes still hold the port"
        time.sleep(0.2)


@pytest.mark.slow
def test_children_that_keep_failing_at_start_make_serve_give_up() -> None:
    result = run_cli(
        ["-m", "app", "serve", "--workers", "2", "--port", str(free_port())],
        {"REDIS_URL": "redis://127.0.0.1:1", "APP_REDIS__RETRY_ATTEMPTS": "0"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the HTTP processes keep failing at start-up; see the log above"
    )
