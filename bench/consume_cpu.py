"""Where a message's consumption goes: CPU per message of this process and of each Redis node.

Run: ``python bench/consume_cpu.py [fifo|priority|topic] [--messages 50000] [--batch 100]
[--tasks 8]``. It starts a local 3-shard Redis Cluster (1 replica each) on free loopback ports,
publishes ``--messages`` messages to one channel through the Python API, then receives and
acknowledges them in batches from ``--tasks`` concurrent tasks, and prints, per consumed
message: the wall time, this process's CPU, the CPU of every node that worked (the channel's
primary and its replica: from ``/proc/<pid>/stat``), and the primary's ``INFO commandstats``
(the script runs, and the commands they ran). Only ever targets 127.0.0.1; Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import MessagingSettings, RedisSettings  # noqa: E402
from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from app.messaging import Broker  # noqa: E402
from app.messaging.migrate import check_layout  # noqa: E402
from app.messaging.schemas import MessagePublish, QueueCreate, TopicCreate, TopicPublish  # noqa: E402
from app.redis import RedisStore, open_store  # noqa: E402
from bench.messaging import free_base_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def node_pids(ports: list[int]) -> dict[int, int]:
    """Return the pid of the server listening on each port (from its command line)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    found = {}
    for line in listing.stdout.splitlines():
        for port in ports:
            if f":{port}" in line and "server" in line:
                found[port] = int(line.split()[0])
    return found


async def command_stats(store: RedisStore) -> dict[tuple[int, str], tuple[int, int]]:
    """Return (port, command) -> (calls, usec) of every primary."""
    client: Any = store.client
    stats = {}
    for node in client.get_primaries():
        info = await client.execute_command("INFO", "commandstats", target_nodes=node)
        for command, values in info.items():
            stats[(node.port, command)] = (values["calls"], values["usec"])
    return stats


async def channel(
    broker: Broker, kind: str, args: argparse.Namespace
) -> Callable[[], Awaitable[int]]:
    """Fill a channel of ``kind`` with the backlog; return one consuming step (how many)."""
    body = {"payload": "x" * 100}
    batch = args.batch
    if kind == "topic":
        topic = broker.topic("consume-cpu")
        await topic.create(TopicCreate(visibility_timeout_s=300))
        await topic.create_group("g")
        for _ in range(args.messages // batch):
            await topic.publish_many([TopicPublish(body=body)] * batch)

        async def from_topic() -> int:
            got = await topic.receive("g", consumer="c", limit=batch)
            if got:
                await topic.ack_many("g", [(d.id, d.receipt) for d in got])
            return len(got)

        return from_topic
    queue = broker.queue("consume-cpu")
    await queue.create(QueueCreate(kind=kind, visibility_timeout_s=300))
    priority = 5 if kind == "priority" else 0
    for _ in range(args.messages // batch):
        await queue.publish_many([MessagePublish(body=body, priority=priority)] * batch)

    async def from_queue() -> int:
        got = await queue.receive(consumer="c", limit=batch)
        if got:
            await queue.ack_many([(d.id, d.receipt) for d in got])
        return len(got)

    return from_queue


async def measure(args: argparse.Namespace, cluster: LocalCluster) -> None:
    async with open_store(RedisSettings(max_connections=64), cluster.url) as store:
        await check_layout(store)
        step = await channel(Broker(store=store, settings=MessagingSettings()), args.kind, args)
        pids = node_pids(cluster.ports)
        nodes_before = {port: cpu_seconds(pid) for port, pid in pids.items()}
        stats_before = await command_stats(store)
        own_before, started = time.process_time(), time.perf_counter()
        done = 0

        async def loop() -> None:
            nonlocal done
            while (got := await step()) > 0:
                done += got

        await asyncio.gather(*(loop() for _ in range(args.tasks)))
        wall = time.perf_counter() - started
        own = time.process_time() - own_before
        nodes = {port: cpu_seconds(pid) - nodes_before[port] for port, pid in pids.items()}
        stats = await command_stats(store)
    print(f"{args.kind}: {done:,} messages consumed in {wall:.2f} s ({done / wall:,.0f}/s)")
    print(f"  CPU per message: this process {own / done * 1e6:.1f} us", end="")
    for port, seconds in sorted(nodes.items()):
        if seconds / done * 1e6 >= 0.5:
            print(f", node :{port} {seconds / done * 1e6:.1f} us", end="")
    print()
    rows = []
    for key, (calls, usec) in stats.items():
        calls_before, usec_before = stats_before.get(key, (0, 0))
        if calls > calls_before:
            rows.append(((usec - usec_before) / done, (calls - calls_before) / done, key))
    print("  the primaries' commandstats, per message (a script's commands are in its time too):")
    for spent, made, (port, command) in sorted(rows, reverse=True)[:14]:
        print(f"    :{port} {command:<28} {made:6.3f} calls {spent:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["fifo", "priority", "topic"], nargs="?", default="topic")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-consume-cpu-") as data_dir:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data_dir), base_port=free_base_port()))
        cluster.start()
        try:
            asyncio.run(measure(args, cluster))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
