"""Benchmark: CPU per profile read inside the process, against the ceiling app.

Run: ``python bench/profiles_cpu.py [--target service|ceiling] [--rounds 5] [--tasks 64]``.
It starts a local 3-shard Redis Cluster on free loopback ports, seeds 1,000 profiles, runs the
app's lifespan and calls the ASGI app directly from ``--tasks`` concurrent tasks (no HTTP
server, no load generator), and prints the process's CPU time per request for each round.

``bench/profiles.py`` measures what a client sees, but on a small shared machine its figures
drift by a fifth between runs; this one leaves out uvicorn and wrk (the same for both apps),
so a change to the service's own path shows up in the best of a few rounds. Compare a change
by running it before and after, several times each.
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

import uvloop
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from bench.profiles import USERS, seed_profiles  # noqa: E402


async def read(app: ASGIApp, user: str) -> None:
    """Send one GET /profile/<user> through the ASGI app; fail on anything but 200."""
    path = f"/profile/{user}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [200]:
        raise RuntimeError(f"GET {path} answered {statuses}")


async def client(app: ASGIApp, requests: int, offset: int) -> None:
    for i in range(requests):
        await read(app, f"user-{(i * 7919 + offset * 13) % USERS}")


async def measure(target: str, rounds: int, tasks: int, requests: int) -> list[float]:
    if target == "service":
        from app.main import create_app

        app: ASGIApp = create_app()
    else:
        from bench.ceiling import app as ceiling

        app = ceiling
    results = []
    async with LifespanManager(app) as manager:
        await asyncio.gather(*(client(manager.app, 50, k) for k in range(tasks)))  # warm-up
        for _ in range(rounds):
            started = time.process_time()
            await asyncio.gather(*(client(manager.app, requests, k) for k in range(tasks)))
            per_request = (time.process_time() - started) / (tasks * requests) * 1e6
            print(f"{target}: {per_request:6.1f} us of CPU per read", flush=True)
            results.append(per_request)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", choices=("service", "ceiling"), default="service")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--requests", type=int, default=100, help="per task and round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        try:
            os.environ["REDIS_URL"] = cluster.url
            seed_profiles(cluster.url)
            results = uvloop.run(measure(args.target, args.rounds, args.tasks, args.requests))
        finally:
            cluster.stop()
    print(f"{args.target}: best {min(results):.1f}, median {statistics.median(results):.1f} us")


if __name__ == "__main__":
    main()
