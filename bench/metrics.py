"""Benchmark: what one scrape of ``GET /metrics`` costs with many queues.

Run: ``python bench/metrics.py [--queues 1000] [--scrapes 50] [--processes 1]``. It starts a
local 3-shard Redis Cluster on free loopback ports, serves the service (uvicorn, no access log)
with ``metrics.state_cache_s = 0``, so that every scrape reads Redis again (the worst case: the
default cache makes scrapes within 2 s free), creates ``--queues`` queues through the API with a
message in every tenth, then times ``--scrapes`` scrapes one after another and prints the
median, p90 and maximum time, the size of the answer and its series. ``--processes N`` serves
with N uvicorn processes (prometheus-client's multiprocess mode). Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from bench.profiles import HOST, free_port, serve  # noqa: E402


async def create_queues(url: str, start: int, stop: int) -> None:
    """Create the queues numbered ``start`` up to ``stop``; publish one message to every tenth."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate = asyncio.Semaphore(32)

        async def one(index: int) -> None:
            async with gate:
                name = f"bench-{index:05d}"
                (await http.put(f"/queues/{name}")).raise_for_status()
                if index % 10 == 0:
                    sent = await http.post(f"/queues/{name}/messages", json={"body": "x"})
                    sent.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(start, stop)))


def scrape_times(url: str, scrapes: int) -> tuple[list[float], int, int]:
    """Scrape ``scrapes`` times; return the times (ms), the answer's bytes and series."""
    times: list[float] = []
    body = ""
    with httpx.Client(base_url=url, timeout=60) as http:
        http.get("/metrics").raise_for_status()  # warm-up
        for _ in range(scrapes):
            started = time.perf_counter()
            answer = http.get("/metrics")
            times.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            body = answer.text
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return times, len(body.encode()), series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        env = {**os.environ, "REDIS_URL": cluster.url, "APP_METRICS__STATE_CACHE_S": "0"}
        if args.processes > 1:
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
        port = free_port()
        server = serve("app.main:app", port, args.processes, env)
        url = f"http://{HOST}:{port}"
        rows = []
        try:
            made = 0
            for target in sorted({0, args.queues // 10, args.queues}):
                asyncio.run(create_queues(url, made, target))
                made = target
                rows.append((target, *scrape_times(url, args.scrapes)))
        finally:
            server.terminate()
            server.wait(30)
            cluster.stop()
    print(
        f"\nGET /metrics, {args.scrapes} scrapes one after another, state read from Redis on "
        f"every scrape (state_cache_s=0), {args.processes} uvicorn process(es)"
    )
    print(f"{'queues':>7} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'bytes':>9} {'series':>7}")
    for queues, times, size, series in rows:
        p90 = statistics.quantiles(times, n=10)[-1]
        print(
            f"{queues:7d} {statistics.median(times):10.1f} {p90:8.1f} {max(times):8.1f} "
            f"{size:9d} {series:7d}"
        )


if __name__ == "__main__":
    main()
