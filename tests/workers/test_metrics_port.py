"""``python -m workers --metrics-port``: the workers' own counters, served by their process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
from redis.asyncio.cluster import RedisCluster

from app.local_cluster import LocalCluster
from app.profiles import keys
from tests.conftest import PROJECT_ROOT, eventually
from tests.observability.scrape import parse, value
from tests.service import free_port


def start_workers(url: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "--metrics-port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "REDIS_URL": url, "APP_PROCESS_INDEX": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_workers_serve_their_counters(cluster: LocalCluster, redis: RedisCluster) -> None:
    port = free_port()
    worker = start_workers(cluster.url, port)
    try:
        for n in range(5):
            await redis.xadd(keys.EVENTS_STREAM, {"user": f"u{n}", "type": "read"})

        async def applied() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    answer = await http.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                return False
            samples = parse(answer.text)
            stream = {"stream": keys.EVENTS_STREAM}
            return value(samples, "mdb_profile_events_applied_total", **stream) == 5

        await eventually(applied, within_s=30, what="the worker's metrics to show 5 events")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
