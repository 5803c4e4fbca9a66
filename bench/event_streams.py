"""Benchmark: profile events over one stream against several (profiles.event_streams), and what
the retention costs the aggregator.

Run: ``python bench/event_streams.py [--events 200000] [--users 20000] [--streams 1,3,4]``.

It starts a local 3-shard Redis Cluster (one replica per shard, appendfsync always, as the
embedded one) on free loopback ports and, for each number of streams, in one run:

1. appends the events as the profile service does (``emit_event`` through the stream writer,
   many concurrent callers), each user's to its stream;
2. starts the aggregator (one consumer per stream, in this process, as a worker process runs
   them) on that backlog and times until every event is applied;
3. reads each primary's CPU time (INFO CPU) before and after each phase: the Redis CPU per
   event, and the busiest shard's share, which is what bounds a stream: one stream's events
   are all applied on one primary's single core, however many shards the cluster has.

Then, with the streams of the last run, the aggregator's apply rate with the retention off and
on (1 s, trimming every 0.2 s while it applies). Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio.cluster import RedisCluster  # noqa: E402

from app.config import Settings  # noqa: E402
from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from app.profiles import keys  # noqa: E402
from app.profiles.aggregator import AGGREGATOR, apply_retention  # noqa: E402
from app.profiles.service import EventsConfig, emit_event  # noqa: E402
from app.redis import RedisStore, open_store  # noqa: E402
from app.streams import StreamWriter  # noqa: E402
from workers.consumer import StreamConsumer  # noqa: E402

CALLERS = 256


@dataclass
class Phase:
    events: int
    seconds: float
    cpu_by_node: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return sum(self.cpu_by_node.values()) / self.events * 1e6

    @property
    def busiest_share(self) -> float:
        total = sum(self.cpu_by_node.values())
        return max(self.cpu_by_node.values()) / total if total else 0.0

    @property
    def busiest_ceiling(self) -> float:
        """Events per second the busiest primary could take at one full core."""
        busiest = max(self.cpu_by_node.values())
        return self.events / busiest if busiest else 0.0


async def primaries_cpu(client: RedisCluster) -> dict[str, float]:
    found: dict[str, float] = {}
    for node in client.get_primaries():
        info = await client.info("cpu", target_nodes=node)
        found[node.name] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


async def append_events(store: RedisStore, count: int, users: int, streams: int) -> None:
    writer = StreamWriter(store)
    config = EventsConfig(streams=streams)
    per_caller = count // CALLERS

    async def caller(index: int) -> None:
        for n in range(per_caller):
            user = f"user-{(index * per_caller + n) % users}"
            await emit_event(streams=writer, user=user, event="read", generation="1", config=config)

    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    await writer.aclose()


async def applied(client: RedisCluster, streams: list[str]) -> bool:
    for stream in streams:
        groups = await client.xinfo_groups(stream)
        if not groups or groups[0]["lag"] != 0 or groups[0]["pending"] != 0:
            return False
    return True


def trimming(store: RedisStore, stream: str, settings: Settings) -> Callable[[], Awaitable[object]]:
    return lambda: apply_retention(store, stream, settings)


async def run_aggregator(
    store: RedisStore,
    client: RedisCluster,
    settings: Settings,
    streams: list[str],
    *,
    retention: bool,
) -> float:
    """Run one consumer per stream until the backlog is applied; return the seconds taken."""
    consumers = [
        StreamConsumer(
            store=store,
            spec=AGGREGATOR,
            stream=stream,
            consumer=f"bench-{stream}",
            settings=settings.workers,
            housekeeping=trimming(store, stream, settings) if retention else None,
        )
        for stream in streams
    ]
    started = time.perf_counter()
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
    while not await applied(client, streams):  # noqa: ASYNC110 - polls Redis, no event to wait on
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    for consumer in consumers:
        consumer.stop()
    await asyncio.gather(*tasks)
    return seconds


async def one_layout(
    url: str, settings: Settings, args: argparse.Namespace, count: int
) -> tuple[Phase, Phase]:
    client = RedisCluster.from_url(url, decode_responses=True)
    await client.flushall()
    streams = keys.event_streams(count)
    for stream in streams:
        await client.xgroup_create(stream, keys.AGGREGATOR_GROUP, id="0", mkstream=True)
    async with open_store(settings.redis, url) as store:
        before = await primaries_cpu(client)
        started = time.perf_counter()
        await append_events(store, args.events, args.users, count)
        append = Phase(
            args.events, time.perf_counter() - started, delta(before, await primaries_cpu(client))
        )
        before = await primaries_cpu(client)
        seconds = await run_aggregator(store, client, settings, streams, retention=False)
        apply = Phase(args.events, seconds, delta(before, await primaries_cpu(client)))
    await client.aclose()
    return append, apply


async def retention_cost(
    url: str, settings: Settings, args: argparse.Namespace, count: int
) -> dict[bool, float]:
    """Apply rate (events/s) with the retention off and on, alternated twice."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    trimming = settings.model_copy(
        update={
            "profiles": settings.profiles.model_copy(update={"events_retention_s": 1}),
            "workers": settings.workers.model_copy(
                update={"claim_interval_s": 0.2, "claim_min_idle_ms": 500}
            ),
        }
    )
    for retention in (False, True, False, True):
        client = RedisCluster.from_url(url, decode_responses=True)
        await client.flushall()
        streams = keys.event_streams(count)
        for stream in streams:
            await client.xgroup_create(stream, keys.AGGREGATOR_GROUP, id="0", mkstream=True)
        async with open_store(settings.redis, url) as store:
            await append_events(store, args.events, args.users, count)
            await asyncio.sleep(1.1)  # every event older than the 1 s retention
            seconds = await run_aggregator(store, client, trimming, streams, retention=retention)
        left = sum([await client.xlen(stream) for stream in streams])
        rates[retention].append(args.events / seconds)
        print(
            f"  retention {'on ' if retention else 'off'}: {args.events / seconds:,.0f} "
            f"events/s applied, {left:,} entries left in the streams"
        )
        await client.aclose()
    return {key: max(values) for key, values in rates.items()}


async def main_async(url: str, args: argparse.Namespace) -> None:
    settings = Settings(
        redis={"url": url},
        workers={"batch_size": args.batch, "block_ms": 100, "claim_interval_s": 5.0},
    )
    counts = [int(n) for n in args.streams.split(",")]
    results = {count: await one_layout(url, settings, args, count) for count in counts}
    print(f"\n{args.events:,} profile read events, {args.users:,} users, 3-shard cluster\n")
    print(
        "| streams | shards used | append events/s | apply events/s | Redis CPU us/event "
        "(append / apply) | busiest primary's share of apply CPU | its ceiling (events/s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for count, (append, apply) in results.items():
        used = sum(1 for cpu in apply.cpu_by_node.values() if cpu > 0.05 * apply.seconds)
        print(
            f"| {count} | {used} | {append.rate:,.0f} | {apply.rate:,.0f} | "
            f"{append.cpu_us_per_event:.1f} / {apply.cpu_us_per_event:.1f} | "
            f"{apply.busiest_share:.0%} | {apply.busiest_ceiling:,.0f} |"
        )
    print("\nretention's cost on the aggregator:")
    rates = await retention_cost(url, settings, args, counts[-1])
    print(
        f"best of two: off {rates[False]:,.0f} events/s, on {rates[True]:,.0f} events/s "
        f"(ratio {rates[True] / rates[False]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--streams", default="1,3,4")
    parser.add_argument("--batch", type=int, default=200, help="workers.batch_size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        try:
            asyncio.run(main_async(cluster.url, args))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
