"""The reusable queue worker: one run per message, leases kept while handling, retries."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest

from app.config import MessagingSettings
from app.local_cluster import LocalCluster
from app.messaging import Broker, Delivery, MessagePublish, QueueCreate
from app.messaging.queues import Queue
from app.redis import open_store
from tests.conftest import eventually, make_settings
from workers.queue_worker import QueueWorker


@pytest.fixture
async def broker(cluster: LocalCluster) -> AsyncIterator[Broker]:
    settings = make_settings(cluster.url)
    async with open_store(settings.redis, cluster.url) as store:
        yield Broker(store=store, settings=MessagingSettings())


async def test_slow_handlers_keep_their_leases_and_run_once(broker: Broker) -> None:
    queue = broker.queue("work")
    await queue.create(QueueCreate(visibility_timeout_s=1.0))
    await queue.publish_many([MessagePublish(body=n) for n in range(4)])
    running: set[int] = set()
    runs: Counter[int] = Counter()

    async def slow(delivery: Delivery) -> None:
        assert delivery.body not in running, "two workers run one message at once"
        running.add(delivery.body)
        runs[delivery.body] += 1
        await asyncio.sleep(2.5)  # longer than the visibility timeout
        running.discard(delivery.body)

    workers = [
        QueueWorker(queue=queue, consumer=f"w{i}", handle=slow, lease_s=1.0, extend_every_s=0.25)
        for i in range(2)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]

    async def all_done() -> bool:
        return sum(worker.stats.handled for worker in workers) == 4

    await eventually(all_done, within_s=30, what="four messages handled")
    for worker in workers:
        worker.stop()
    await asyncio.gather(*tasks)
    assert runs == {0: 1, 1: 1, 2: 1, 3: 1}
    assert (await queue.counts()).in_flight == 0


async def test_a_failing_handler_is_retried_then_dead_lettered(broker: Broker) -> None:
    queue = broker.queue("work")
    await queue.create(QueueCreate(max_deliveries=2))
    await queue.publish(MessagePublish(body="poison"))

    async def fail(delivery: Delivery) -> None:
        raise ValueError("cannot handle " + str(delivery.body))

    worker = QueueWorker(queue=queue, consumer="w", handle=fail, retry_delay_s=0.05)
    task = asyncio.create_task(worker.run())

    async def dead() -> bool:
        return (await queue.counts()).dead_lettered == 1

    await eventually(dead, within_s=10, what="the message to be dead-lettered")
    worker.stop()
    await task
    assert worker.stats.failed == 2
    (letter,), _ = await queue.dead_letters()
    assert letter.reason == "nacked on delivery 2 of 2"


class CountingAcks:
    """The queue, with its ack_each calls and their sizes counted."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.name = queue.name
        self.receive = queue.receive
        self.ack = queue.ack
        self.nack = queue.nack
        self.extend = queue.extend
        self.ack_calls: list[int] = []

    async def ack_each(self, settled: Sequence[tuple[str, str]]) -> list[str | None]:
        self.ack_calls.append(len(settled))
        return await self.queue.ack_each(settled)


async def test_a_worker_handles_up_to_its_concurrency_at_once_and_acks_in_batches(
    broker: Broker,
) -> None:
    queue = broker.queue("work")
    await queue.create(QueueCreate(visibility_timeout_s=1.0))
    await queue.publish_many([MessagePublish(body=n) for n in range(40)])
    counting = CountingAcks(queue)
    running: set[int] = set()
    most = 0
    runs: Counter[int] = Counter()

    async def slow(delivery: Delivery) -> None:
        nonlocal most
        running.add(delivery.body)
        most = max(most, len(running))
        runs[delivery.body] += 1
        await asyncio.sleep(1.5)  # longer than the visibility timeout: leases are extended
        running.discard(delivery.body)

    worker = QueueWorker(
        queue=counting, consumer="w", handle=slow, concurrency=8, lease_s=1.0, extend_every_s=0.25
    )
    task = asyncio.create_task(worker.run())

    async def all_done() -> bool:
        return worker.stats.handled == 40

    started = asyncio.get_running_loop().time()
    await eventually(all_done, within_s=30, what="forty messages handled")
    elapsed = asyncio.get_running_loop().time() - started
    worker.stop()
    await task
    assert most == 8, "the worker handles up to its concurrency at once, never more"
    assert runs == dict.fromkeys(range(40), 1)
    assert elapsed < 40 * 1.5 / 4, "handled concurrently"
    assert sum(counting.ack_calls) == 40
    assert len(counting.ack_calls) < 40, counting.ack_calls  # acknowledged in batches
    assert (await queue.counts()).in_flight == 0


async def test_stopping_finishes_the_messages_held_and_acknowledges_them(broker: Broker) -> None:
    queue = broker.queue("work")
    await queue.create(QueueCreate())
    await queue.publish_many([MessagePublish(body=n) for n in range(5)])
    started = asyncio.Event()

    async def slow(_delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.5)

    worker = QueueWorker(queue=queue, consumer="w", handle=slow, concurrency=5)
    task = asyncio.create_task(worker.run())
    await started.wait()
    worker.stop()
    await task
    assert worker.stats.handled == 5
    counts = await queue.counts()
    assert (counts.ready, counts.in_flight) == (0, 0)
