"""The messaging module's entry point: queues, topics and traces over one Redis store.

The lifespan builds one ``Broker`` per process (``request.state.broker``; ``BrokerDep`` in
routes); code inside the service uses it directly::

    queue = broker.queue("video-chunking")
    await queue.publish(MessagePublish(body={"video": video_id}, priority=5))
    for delivery in await queue.receive(consumer="chunker-1", max=10, wait_s=5):
        ...
        await queue.ack(delivery.id, delivery.receipt)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from app.config import MessagingSettings
from app.messaging import keys
from app.messaging.exceptions import TraceNotFound
from app.messaging.queues import Queue
from app.messaging.schemas import MessageTrace, TraceEvent, check_name, from_ms
from app.messaging.topics import Topic
from app.redis import RedisStore


class Broker:
    """Queues, topics and traces, with in-process wake-ups for long-polling receivers."""

    def __init__(self, *, store: RedisStore, settings: MessagingSettings) -> None:
        self.store = store
        self.settings = settings
        self._signals: dict[str, asyncio.Event] = {}

    def queue(self, name: str) -> Queue:
        """Return a handle on the queue ``name`` (it need not exist yet)."""
        return Queue(broker=self, name=check_name(name, what="queue"))

    def topic(self, name: str) -> Topic:
        """Return a handle on the topic ``name`` (it need not exist yet)."""
        return Topic(broker=self, name=check_name(name, what="topic"))

    async def trace(self, message_id: str) -> MessageTrace:
        """Return a message's lifecycle, oldest event first; raise TraceNotFound."""
        key = keys.trace_key(message_id)
        raw: list[str] = await self.store.call(key, "LRANGE", key, 0, -1, what="read trace")
        if not raw:
            raise TraceNotFound(message_id)
        return MessageTrace(id=message_id, events=[_event(json.loads(item)) for item in raw])

    def notify(self, prefix: str) -> None:
        """Wake this process's receivers waiting on the queue or topic under ``prefix``."""
        signal = self._signals.pop(prefix, None)
        if signal is not None:
            signal.set()

    async def wait(self, prefix: str, timeout_s: float) -> None:
        """Wait until ``notify(prefix)`` or ``timeout_s``, whichever comes first."""
        signal = self._signals.setdefault(prefix, asyncio.Event())
        try:
            await asyncio.wait_for(signal.wait(), timeout_s)
        except TimeoutError:
            return


def _event(raw: dict[str, Any]) -> TraceEvent:
    # ``r`` is the receipt an ack or nack carried (to recognise a re-sent one): not shown.
    raw.pop("r", None)
    raw["at"] = from_ms(raw["at"])
    delay = raw.pop("delay_ms", None)
    if delay is not None:
        raw["delay_s"] = delay / 1000
    lease = raw.pop("lease_until", None)
    if lease is not None:
        raw["lease_expires_at"] = from_ms(lease)
    return TraceEvent.model_validate(raw)
