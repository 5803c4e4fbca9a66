"""Benchmark: how long requests wait while a primary fails over.

Run: ``python bench/failover.py [--writers 32] [--seconds 14] [--kill-at 4] [--timeout 5]``.
It starts a local 3-primary, 3-replica cluster (``cluster-node-timeout 2000``) on free loopback
ports, serves the service on it (``python -m app serve``, one process), runs ``--writers``
concurrent profile writers over HTTP with a ``--timeout`` client timeout, kills a primary with
SIGKILL at ``--kill-at`` seconds, and prints how many requests were made, what the ones that did
not answer 201 answered, how many took over 4 s, and the slowest. ``APP_REDIS__*`` variables in
the environment reach the service, to compare retry settings in one sitting. Only ever targets
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def load(args: argparse.Namespace, cluster: LocalCluster, url: str) -> None:
    # (seconds since the start when sent, seconds it took, what it answered)
    answers: list[tuple[float, float, int | str]] = []
    limits = httpx.Limits(max_connections=args.writers, max_keepalive_connections=args.writers)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        start = time.monotonic()
        stop = start + args.seconds

        async def writer(index: int) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                sent = time.monotonic()
                try:
                    answer: int | str = (
                        await http.post(f"/profile/w{index}-{n}", json={"n": str(n)})
                    ).status_code
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                answers.append((sent - start, time.monotonic() - sent, answer))

        async def killer() -> None:
            await asyncio.sleep(args.kill_at)
            # Off the event loop: the writers' timings must not include it.
            ports = await asyncio.to_thread(cluster.primary_ports)
            victim = next(i for i, node in enumerate(cluster.nodes) if node.port == ports[0])
            cluster.kill_node(victim)
            print(f"killed the primary on port {ports[0]} at {time.monotonic() - start:.2f} s")

        await asyncio.gather(killer(), *(writer(i) for i in range(args.writers)))
    other = [(round(sent, 2), round(took, 2), a) for sent, took, a in answers if a != 201]
    slowest = max(took for _, took, _ in answers)
    print(
        f"requests={len(answers)} not-201={len(other)} over-4s="
        f"{sum(took > 4 for _, took, _ in answers)} slowest={slowest:.2f}s"
    )
    if other:
        print(f"not 201 (sent at, took, answer): {other[:20]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=14.0)
    parser.add_argument("--kill-at", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="failover-"))
    cluster = LocalCluster(ClusterSpec(data_dir=data, die_with_parent=True))
    cluster.start()
    port = free_port()
    env = {**os.environ, "REDIS_URL": cluster.url}
    with (data / "service.log").open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        asyncio.run(load(args, cluster, url))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        cluster.stop()
        print(f"service log: {data / 'service.log'}")


if __name__ == "__main__":
    main()
