"""The messaging module's entry point: queues, topics and traces over one Redis store.

The lifespan builds one ``Broker`` per process (``request.state.broker``; ``BrokerDep`` in
routes); code inside the service uses it directly::

    queue = broker.queue("video-chunking")
    await queue.publish(MessagePublish(body={"video": video_id}, priority=5))
    for delivery in await queue.receive(consumer="chunker-1", limit=10, wait_s=5):
        ...
        await queue.ack(delivery.id, delivery.receipt)
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from app.config import MessagingSettings
from app.messaging import keys
from app.messaging.channel import ChannelContext
from app.messaging.exceptions import QueueNotFound, TopicNotFound, TraceNotFound
from app.messaging.metrics import ChannelCounters
from app.messaging.queues import Queue
from app.messaging.schemas import MessageTrace, TraceEvent, check_name, from_ms
from app.messaging.topics import Topic
from app.redis import RedisStore
from app.scripting import LuaScript, as_str

READ_TRACE = LuaScript.load(Path(__file__).with_name("read_trace.lua"))


class StoredEvent(BaseModel):
    """A trace event as the scripts store it: JSON, times in server milliseconds.

    The fields a trace shows as they are stored (event, queue, consumer...) are kept as extras.
    """

    model_config = ConfigDict(extra="allow")

    at: int
    delay_ms: int | None = None
    lease_until: int | None = None
    # The receipt an ack or nack carried, to recognise a re-sent one: not shown.
    r: str | None = None
    # On an acknowledgement's line, when the delivery it ends was made, if that delivery has no
    # line of its own (channel.lua, ``acked_line``): shown as that delivery's event.
    delivered_at: int | None = None


class Broker:
    """Queues, topics and traces, with in-process wake-ups for long-polling receivers."""

    def __init__(
        self,
        *,
        store: RedisStore,
        settings: MessagingSettings,
        channel_series: int | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        # The label values of the queue and topic counters: ``channel_series`` names of each
        # kind keep their own (metrics.channel_series; its default when not given).
        counters = (
            ChannelCounters() if channel_series is None else ChannelCounters.capped(channel_series)
        )
        self._channels = ChannelContext(store=store, settings=settings, counters=counters)

    def queue(self, name: str) -> Queue:
        """Return a handle on the queue ``name`` (it need not exist yet)."""
        return Queue(context=self._channels, name=check_name(name, what="queue"))

    def topic(self, name: str) -> Topic:
        """Return a handle on the topic ``name`` (it need not exist yet)."""
        return Topic(context=self._channels, name=check_name(name, what="topic"))

    async def trace(self, message_id: str) -> MessageTrace:
        """Return a message's lifecycle, oldest event first; raise TraceNotFound."""
        raw = await READ_TRACE(
            self.store,
            keys=keys.message_trace_keys(message_id),
            args=[message_id],
            what="read trace",
        )
        if raw is None:
            raise TraceNotFound(message_id)
        lines = as_str(raw).split("\n")
        lines += await self._in_flight_lines(message_id, lines[0])
        # Written when they happened, but a delivery's line with the line that ends it.
        events = sorted(
            (event for line in lines for event in _events(line)), key=lambda event: event.at
        )
        return MessageTrace(id=message_id, events=events)

    async def _in_flight_lines(self, message_id: str, first_line: str) -> list[str]:
        """Return the lines the deliveries of a message in flight still owe its trace, from its
        channel (which the trace's first line names)."""
        first = json.loads(first_line)
        channel: Queue | Topic
        if "queue" in first:
            channel = self.queue(first["queue"])
        elif "topic" in first:
            channel = self.topic(first["topic"])
        else:
            return []
        try:
            return await channel.in_flight_lines(message_id)
        except (QueueNotFound, TopicNotFound):  # deleted since: nothing is in flight
            return []


def _events(text: str) -> list[TraceEvent]:
    """Return the events of one stored line: its own, after the delivery it carries (if any)."""
    stored = StoredEvent.model_validate_json(text)
    extra = stored.model_extra or {}
    events = []
    if stored.delivered_at is not None:
        # The delivery an acknowledgement ends: its channel, group, consumer and attempt.
        delivered = {**extra, "event": "delivered", "at": from_ms(stored.delivered_at)}
        events.append(TraceEvent.model_validate(delivered))
    shown: dict[str, object] = {**extra, "at": from_ms(stored.at)}
    if stored.delay_ms is not None:
        shown["delay_s"] = stored.delay_ms / 1000
    if stored.lease_until is not None:
        shown["lease_expires_at"] = from_ms(stored.lease_until)
    events.append(TraceEvent.model_validate(shown))
    return events
