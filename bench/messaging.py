"""Benchmark: messages per second through the messaging module's Python API, against a ceiling.

Run: ``python bench/messaging.py [--seconds 5] [--batch 100] [--tasks 8] [--body-bytes 100]``.
It starts a local 3-shard Redis Cluster (1 replica each, append-only file with
``appendfsync always``, as the embedded default runs) on free loopback ports, then, in one run
and one process, for each kind of channel:

- publishes for ``--seconds`` through the API in batches (``publish_many``) from ``--tasks``
  concurrent tasks, then drains the backlog with ``receive`` + ``ack_many`` (same batch size);
  the batched rows of the three channels and the bare stream loop (the ratios' reference) are
  measured in ``--rounds`` interleaved rounds (each publishing for ``--seconds``, so the backlogs
  are as large as in one round) and reported as the median of each (this machine drifts
  during a run: interleaving puts them in the same stretch of it);
- does the same with the bare Redis commands the channel is built on, through the same client,
  with the same batching and concurrency: the ceiling (RPUSH/LPOP for a fifo queue,
  ZADD/ZPOPMIN for a priority queue, XADD pipelined + XREADGROUP/XACK for a topic);
- publishes and consumes one message per call through the API, for contrast;
- drains a fifo queue's backlog with the queue worker (``workers/queue_worker.py``) and a no-op
  handler, at concurrency 1, 16 and 100 (its "published" column is 0: it only consumes).

The Python-API rows run as the service's processes do: on uvloop (uvicorn's loop, and
``python -m workers``'s, ``app/runtime.py``) with the garbage collector tuned once the client
is open (``app.lifespan``). ``--as-library`` runs them as a program that imports the package
does by default: asyncio's own loop, Python's collector settings (how this bench ran before
issue 19's seventh step). The HTTP rows' load generator runs in this process afterwards, on
asyncio's loop, with the collector as the Python-API rows left it (default with
``--http-only``); it loads the service and the bare app alike, so their ratios hold either way.

``--appendfsync everysec`` measures the same with the AOF flushed once a second (MemoryDB's
durability comes from its transaction log, not from local fsyncs).

``redis-benchmark`` (the C client, pipelined) is run as well when it is installed, as the
server-side reference. Then (unless ``--no-http``) ``bench/messaging_http.py`` serves the service
and a bare FastAPI app with the same routes (``bench/ceiling.py``) on the same cluster and loads
both over HTTP: batch publish, receive + batch ack, one message per request. Only ever targets
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio.cluster import RedisCluster  # noqa: E402

from app import runtime  # noqa: E402
from app.config import MessagingSettings, RedisSettings  # noqa: E402
from app.local_cluster import ClusterSpec, LocalCluster, port_free  # noqa: E402
from app.messaging import Broker  # noqa: E402
from app.messaging.migrate import check_layout  # noqa: E402
from app.messaging.schemas import MessagePublish, QueueCreate, TopicCreate, TopicPublish  # noqa: E402
from app.redis import RedisStore, open_store  # noqa: E402
from bench.messaging_http import print_http, run_http  # noqa: E402
from workers.queue_worker import QueueWorker  # noqa: E402

HOST = "127.0.0.1"


# A case measured in rounds: its channel, how, and a run of it for some seconds.
Case = tuple[str, str, Callable[[float], Awaitable[tuple[float, float]]]]


def free_base_port() -> int:
    for base in range(23000, 50000, 6):
        if all(port_free(HOST, p) and port_free(HOST, p + 10000) for p in range(base, base + 6)):
            return base
    raise RuntimeError("no free ports")


async def for_seconds(seconds: float, tasks: int, step: Callable[[], Awaitable[int]]) -> float:
    """Run ``step`` in ``tasks`` concurrent loops for ``seconds``; return items per second."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            # Not ``done += await step()``: that reads ``done`` before the await, and the
            # other loops' additions made meanwhile would be lost.
            got = await step()
            done += got

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done / (time.perf_counter() - started)


async def until_drained(tasks: int, step: Callable[[], Awaitable[int]]) -> float:
    """Run ``step`` in ``tasks`` loops until it returns 0 everywhere; return items per second."""
    done = 0

    async def loop() -> None:
        nonlocal done
        while (got := await step()) > 0:
            done += got

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return done / (time.perf_counter() - started)


class Bench:
    def __init__(self, store: RedisStore, args: argparse.Namespace) -> None:
        self.store = store
        self.broker = Broker(store=store, settings=MessagingSettings())
        self.args = args
        self.body = {"payload": "x" * args.body_bytes}
        self.rows: list[tuple[str, str, float, float]] = []

    def record(self, channel: str, how: str, published: float, consumed: float) -> None:
        self.rows.append((channel, how, published, consumed))
        print(f"  {channel:<9} {how:<34} {published:>10,.0f} {consumed:>10,.0f}", flush=True)

    async def queue(self, kind: str, batch: int, seconds: float) -> tuple[float, float]:
        name = f"bench-{kind}-{batch}"
        queue = self.broker.queue(name)
        await queue.create(QueueCreate(kind=kind, visibility_timeout_s=300))
        priority = 5 if kind == "priority" else 0
        messages = [MessagePublish(body=self.body, priority=priority)] * batch

        async def publish() -> int:
            return len(await queue.publish_many(messages))

        async def consume() -> int:
            got = await queue.receive(consumer="bench", limit=batch)
            if got:
                await queue.ack_many([(d.id, d.receipt) for d in got])
            return len(got)

        published = await for_seconds(seconds, self.args.tasks, publish)
        consumed = await until_drained(self.args.tasks, consume)
        return published, consumed

    async def raw_list(self, batch: int) -> None:
        key = "{bench-raw}:list"
        value = MessagePublish(body=self.body).model_dump_json()
        values = [value] * batch
        client = self.store.client

        async def push() -> int:
            await client.rpush(key, *values)
            return batch

        async def pop() -> int:
            got = await client.lpop(key, batch)
            return len(got or [])

        published = await for_seconds(self.args.seconds, self.args.tasks, push)
        consumed = await until_drained(self.args.tasks, pop)
        self.record("fifo queue", f"ceiling: RPUSH/LPOP x{batch}", published, consumed)

    async def raw_zset(self, batch: int) -> None:
        key = "{bench-raw}:zset"
        value = MessagePublish(body=self.body).model_dump_json()
        client = self.store.client
        counter = 0

        async def push() -> int:
            nonlocal counter
            members = {}
            for _ in range(batch):
                counter += 1
                members[f"{counter:016d}:{value}"] = -5
            await client.zadd(key, members)
            return batch

        async def pop() -> int:
            got = await client.zpopmin(key, batch)
            return len(got)

        published = await for_seconds(self.args.seconds, self.args.tasks, push)
        consumed = await until_drained(self.args.tasks, pop)
        self.record("priority queue", f"ceiling: ZADD/ZPOPMIN x{batch}", published, consumed)

    async def topic(self, batch: int, seconds: float) -> tuple[float, float]:
        topic = self.broker.topic(f"bench-topic-{batch}")
        await topic.create(TopicCreate(visibility_timeout_s=300))
        await topic.create_group("g")
        messages = [TopicPublish(body=self.body)] * batch

        async def publish() -> int:
            return len(await topic.publish_many(messages))

        async def consume() -> int:
            got = await topic.receive("g", consumer="bench", limit=batch)
            if got:
                await topic.ack_many("g", [(d.id, d.receipt) for d in got])
            return len(got)

        published = await for_seconds(seconds, self.args.tasks, publish)
        consumed = await until_drained(self.args.tasks, consume)
        return published, consumed

    async def raw_stream(self, batch: int, seconds: float) -> tuple[float, float]:
        key = "{bench-raw}:stream"
        client = self.store.client
        if not await client.exists(key):
            await client.xgroup_create(key, "g", id="0", mkstream=True)
        value = MessagePublish(body=self.body).model_dump_json()

        async def push() -> int:
            pipe = client.pipeline(transaction=False)
            for _ in range(batch):
                pipe.xadd(key, {"body": value})
            await pipe.execute()
            return batch

        async def pop() -> int:
            reply: Any = await client.xreadgroup("g", "bench", {key: ">"}, count=batch)
            ids = [str(entry[0]) for _stream, entries in reply or () for entry in entries]
            if ids:
                await client.xack(key, "g", *ids)
            return len(ids)

        published = await for_seconds(seconds, self.args.tasks, push)
        consumed = await until_drained(self.args.tasks, pop)
        return published, consumed

    async def interleaved(self, cases: list[Case]) -> None:
        """Measure ``cases`` in ``--rounds`` rounds, one after the other in each round, and
        record the median of each: the machine drifts over a run, and interleaving puts the
        cases that are compared in the same stretch of it."""
        figures: list[list[tuple[float, float]]] = [[] for _ in cases]
        for _round in range(self.args.rounds):
            for figure, (_channel, _how, case) in zip(figures, cases, strict=True):
                figure.append(await case(self.args.seconds))
        for figure, (channel, how, _case) in zip(figures, cases, strict=True):
            published = statistics.median(p for p, _c in figure)
            consumed = statistics.median(c for _p, c in figure)
            self.record(channel, how, published, consumed)

    async def worker(self, concurrency: int, messages: int) -> None:
        """The queue worker (workers/queue_worker.py) draining a backlog with a no-op handler."""
        queue = self.broker.queue(f"bench-worker-{concurrency}")
        await queue.create(QueueCreate(kind="fifo", visibility_timeout_s=300))
        for start in range(0, messages, 500):
            await queue.publish_many([MessagePublish(body=self.body)] * min(500, messages - start))

        async def noop(_delivery: object) -> None:
            return None

        worker = QueueWorker(queue=queue, consumer="bench", handle=noop, concurrency=concurrency)
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while worker.stats.handled < messages:  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.01)
        rate = messages / (time.perf_counter() - started)
        worker.stop()
        await task
        self.record("fifo queue", f"queue worker, no-op, concurrency {concurrency}", 0, rate)


def redis_benchmark(port: int, batch: int) -> list[str]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return ["redis-benchmark not installed: skipped"]
    result = subprocess.run(
        [
            binary,
            "-h",
            HOST,
            "-p",
            str(port),
            "--cluster",
            "-t",
            "lpush,lpop",
            "-n",
            "500000",
            "-P",
            str(batch),
            "-c",
            "8",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return [
        line.strip()
        for line in result.stdout.replace("\r", "\n").splitlines()
        if "per second" in line
    ]


async def run(args: argparse.Namespace, cluster: LocalCluster) -> None:
    async with open_store(RedisSettings(max_connections=64), cluster.url) as store:
        # Marks the messaging layout as the service does when it starts on an empty database
        # (the HTTP rows start the service on this cluster afterwards).
        await check_layout(store)
        if not args.as_library:
            runtime.tune_garbage_collector()
        collector = "default" if args.as_library else "tuned"
        print(f"event loop: {runtime.loop_name()}, garbage collector {collector}")
        await measure(args, store, cluster)


async def measure(args: argparse.Namespace, store: RedisStore, cluster: LocalCluster) -> None:
    """Run every case against ``store`` and print the figures and their ratios."""
    client = store.client
    assert isinstance(client, RedisCluster)
    for node in client.get_nodes():
        await client.execute_command(
            "CONFIG", "SET", "appendfsync", args.appendfsync, target_nodes=node
        )
        await client.execute_command(
            "CONFIG", "SET", "auto-aof-rewrite-percentage", "0", target_nodes=node
        )
    bench = Bench(store, args)
    batch = args.batch
    print(
        f"messages/s, {args.tasks} concurrent tasks, bodies of {args.body_bytes} bytes, "
        f"appendfsync {args.appendfsync}"
    )
    print(f"  {'channel':<9} {'how':<34} {'published':>10} {'consumed':>10}")
    batched = f"API, batches of {batch}"
    # The figures the ratios compare: the median of interleaved rounds.
    await bench.interleaved(
        [
            ("fifo queue", batched, lambda seconds: bench.queue("fifo", batch, seconds)),
            ("priority queue", batched, lambda seconds: bench.queue("priority", batch, seconds)),
            ("topic", batched, lambda seconds: bench.topic(batch, seconds)),
            (
                "topic",
                f"ceiling: XADD/XREADGROUP+XACK x{batch}",
                lambda seconds: bench.raw_stream(batch, seconds),
            ),
        ]
    )
    await bench.raw_list(batch)
    await bench.raw_zset(batch)
    one = "API, one message per call"
    bench.record("fifo queue", one, *await bench.queue("fifo", 1, args.seconds / 2))
    bench.record("topic", one, *await bench.topic(1, args.seconds / 2))
    for concurrency in (1, 16, 100):
        await bench.worker(concurrency, 2_000 if concurrency == 1 else 20_000)
    rows = {(channel, how): (p, c) for channel, how, p, c in bench.rows}
    stream = rows[("topic", f"ceiling: XADD/XREADGROUP+XACK x{batch}")]
    print(
        "ratios, API batched / its own structure's ceiling, and / the bare stream loop (bare "
        "XADD for publishing, XREADGROUP+XACK for consuming: issue 19's target, >= 0.5):"
    )
    for channel in ("fifo queue", "priority queue", "topic"):
        api = rows[(channel, f"API, batches of {batch}")]
        ceiling = next(v for (ch, how), v in rows.items() if ch == channel and "ceiling" in how)
        print(
            f"  {channel:<14} own {api[0] / ceiling[0]:.2f} {api[1] / ceiling[1]:.2f}"
            f"   stream {api[0] / stream[0]:.2f} {api[1] / stream[1]:.2f}"
        )
    print(f"redis-benchmark --cluster -P {batch} -c 8 (C client, the server's reference):")
    for line in redis_benchmark(cluster.ports[0], batch):
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds",
        type=int,
        # Three left the ratios of one run about 0.08 apart from the next run's (2026-12-01).
        default=5,
        help="interleaved rounds of the batched API rows and the bare stream loop (median)",
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--body-bytes", type=int, default=100)
    parser.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    parser.add_argument(
        "--as-library",
        action="store_true",
        help="run the Python-API rows on asyncio's loop with Python's collector settings",
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP rows")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-messaging-") as data_dir:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data_dir), base_port=free_base_port()))
        cluster.start()
        try:
            if not args.http_only:
                (asyncio.run if args.as_library else runtime.run)(run(args, cluster))
            if not args.no_http:
                rows = run_http(
                    cluster.url,
                    seconds=args.seconds,
                    batch=args.batch,
                    tasks=args.tasks,
                    body_bytes=args.body_bytes,
                )
                print_http(rows, tasks=args.tasks, body_bytes=args.body_bytes)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
