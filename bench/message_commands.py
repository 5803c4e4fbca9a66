"""Where a message's life goes: the Redis commands each message costs, by channel and step.

Run: ``python bench/message_commands.py [--messages 1000] [--batch 100]``. It starts a local
3-shard Redis Cluster on free loopback ports and, for a fifo queue, a priority queue and a topic
with one group, publishes ``--messages`` messages through the Python API in batches, receives
them and acknowledges them in batches, reading ``INFO commandstats`` on every primary around
each step: the calls of each command (those a script runs included, and the EVALSHA itself)
divided by the messages. Also the bare ceiling's loop (RPUSH/LPOP, XADD + XREADGROUP/XACK).
Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio.cluster import RedisCluster  # noqa: E402

from app.config import MessagingSettings, RedisSettings  # noqa: E402
from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from app.messaging import Broker  # noqa: E402
from app.messaging.queues import Queue  # noqa: E402
from app.messaging.schemas import (  # noqa: E402
    Delivery,
    MessagePublish,
    QueueCreate,
    TopicCreate,
    TopicDelivery,
    TopicPublish,
)
from app.redis import RedisStore, open_store  # noqa: E402

BODY = {"payload": "x" * 100}


async def command_calls(client: RedisCluster) -> Counter[str]:
    """Return the calls of every command on every primary, summed."""
    calls: Counter[str] = Counter()
    for node in client.get_primaries():
        stats = await client.info("commandstats", target_nodes=node)
        for name, value in stats.items():
            calls[name.removeprefix("cmdstat_")] += int(value["calls"])
    return calls


async def measure(
    client: RedisCluster, messages: int, step: Callable[[], Awaitable[object]]
) -> dict[str, float]:
    before = await command_calls(client)
    await step()
    after = await command_calls(client)
    # INFO itself is counted once per primary per read.
    used = {name: (after[name] - before.get(name, 0)) / messages for name in after}
    used["info"] = used.get("info", 0) - len(client.get_primaries()) / messages
    return {name: per for name, per in used.items() if per > 0.0001}


def show(channel: str, step: str, used: dict[str, float]) -> float:
    total = sum(used.values())
    parts = ", ".join(
        f"{name} {per:.2f}" for name, per in sorted(used.items(), key=lambda i: -i[1])
    )
    print(f"| {channel} | {step} | {total:.2f} | {parts} |", flush=True)
    return total


async def run(url: str, args: argparse.Namespace) -> None:
    client = RedisCluster.from_url(url, decode_responses=True)
    await client.initialize()
    async with open_store(RedisSettings(), url) as store:
        broker = Broker(store=store, settings=MessagingSettings())
        n, batch = args.messages, args.batch
        print(f"\n{n} messages, batches of {batch}: Redis commands per message\n")
        print("| channel | step | commands | by command |")
        print("| --- | --- | --- | --- |")
        for kind in ("fifo", "priority"):
            queue = broker.queue(f"commands-{kind}")
            await queue.create(QueueCreate(kind=kind, visibility_timeout_s=300))
            message = MessagePublish(body=BODY, priority=5 if kind == "priority" else 0)
            leased: list[Delivery] = []

            async def publish(queue: Queue = queue, message: MessagePublish = message) -> None:
                for _ in range(n // batch):
                    await queue.publish_many([message] * batch)

            async def receive(queue: Queue = queue, leased: list[Delivery] = leased) -> None:
                while got := await queue.receive(consumer="c", limit=batch):
                    leased.extend(got)

            async def ack(queue: Queue = queue, leased: list[Delivery] = leased) -> None:
                for start in range(0, len(leased), batch):
                    chunk = leased[start : start + batch]
                    await queue.ack_many([(d.id, d.receipt) for d in chunk])

            life = 0.0
            for step, action in (("publish", publish), ("receive", receive), ("ack", ack)):
                life += show(f"{kind} queue", step, await measure(client, n, action))
            print(f"| {kind} queue | **life** | **{life:.2f}** | |")
        topic = broker.topic("commands-topic")
        await topic.create(TopicCreate(visibility_timeout_s=300))
        await topic.create_group("g", start="earliest")
        delivered: list[TopicDelivery] = []

        async def publish_topic() -> None:
            for _ in range(n // batch):
                await topic.publish_many([TopicPublish(body=BODY)] * batch)

        async def receive_topic() -> None:
            while got := await topic.receive("g", consumer="c", limit=batch):
                delivered.extend(got)

        async def ack_topic() -> None:
            for start in range(0, len(delivered), batch):
                chunk = delivered[start : start + batch]
                await topic.ack_many("g", [(d.id, d.receipt) for d in chunk])

        life = 0.0
        for step, topic_step in (
            ("publish", publish_topic),
            ("receive", receive_topic),
            ("ack", ack_topic),
        ):
            life += show("topic, 1 group", step, await measure(client, n, topic_step))
        print(f"| topic, 1 group | **life** | **{life:.2f}** | |")
        await bare(client, store, n, batch)
    await client.aclose()


async def bare(client: RedisCluster, store: RedisStore, n: int, batch: int) -> None:
    stream, group = "{bench-bare}:stream", "g"
    await client.xgroup_create(stream, group, id="0", mkstream=True)

    async def publish() -> None:
        for _ in range(n // batch):
            pipe = client.pipeline(transaction=False)
            for _ in range(batch):
                pipe.xadd(stream, {"body": "x" * 100})
            await pipe.execute()

    async def consume() -> None:
        while True:
            reply: Any = await client.xreadgroup(group, "c", {stream: ">"}, count=batch)
            if not reply:
                return
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await client.xack(stream, group, *ids)

    life = show("bare stream", "XADD", await measure(client, n, publish))
    life += show("bare stream", "XREADGROUP + XACK", await measure(client, n, consume))
    print(f"| bare stream | **life** | **{life:.2f}** | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-commands-") as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        try:
            asyncio.run(run(cluster.url, args))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
