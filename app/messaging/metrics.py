"""What queues and topics count as they run: the events of their messages, per channel.

The counts come from what the scripts answer (how many they published, leased, acknowledged,
expired, dead-lettered or redrove), so a step that changed nothing counts nothing and no
Redis command is added for them. A re-send of a step after a lost reply (redis-py's, or a
client's retry) may count twice: the scripts answer a re-send as the first call.

Label values are queue and topic names through ``ChannelLabels``: the first
``metrics.channel_series`` names a process counts keep their own series, later ones share
``_other``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Counter

from app.config import MetricsSettings
from app.metrics import ChannelLabels

QueueEvent = Literal[
    "published", "delivered", "acked", "nacked", "expired", "dead_lettered", "redriven"
]
TopicEvent = Literal["published", "delivered", "acked", "nacked", "dead_lettered"]

QUEUE_EVENTS = Counter(
    "mdb_queue_events",
    "Queue messages by what happened to them: published, delivered (each lease), acked, "
    "nacked, expired (a lease ran out), dead_lettered, redriven.",
    ["queue", "event"],
)
TOPIC_EVENTS = Counter(
    "mdb_topic_events",
    "Topic messages by what happened to them, over all groups: published, delivered (each "
    "lease to a group's consumer), acked, nacked, dead_lettered.",
    ["topic", "event"],
)


def _labels() -> ChannelLabels:
    return ChannelLabels(cap=MetricsSettings().channel_series)


@dataclass(frozen=True)
class ChannelCounters:
    """The label values of one process's (or one broker's) queue and topic counters."""

    queues: ChannelLabels = field(default_factory=_labels)
    topics: ChannelLabels = field(default_factory=_labels)
    # Each series' child, by its label values: ``Counter.labels`` takes a lock and checks its
    # arguments on every call, and the busy steps count once per call (at most ``cap`` + 1
    # values per kind, so bounded).
    _children: dict[tuple[Counter, str, str], Counter] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def capped(cls, series: int) -> ChannelCounters:
        """Return counters whose queues and topics each keep ``series`` names of their own."""
        return cls(queues=ChannelLabels(cap=series), topics=ChannelLabels(cap=series))

    def queue(self, name: str, event: QueueEvent, count: int = 1) -> None:
        """Count ``count`` messages of the queue ``name`` that went through ``event``."""
        if count > 0:
            self._child(QUEUE_EVENTS, self.queues(name), event).inc(count)

    def topic(self, name: str, event: TopicEvent, count: int = 1) -> None:
        """Count ``count`` messages of the topic ``name`` that went through ``event``."""
        if count > 0:
            self._child(TOPIC_EVENTS, self.topics(name), event).inc(count)

    def _child(self, counter: Counter, label: str, event: str) -> Counter:
        key = (counter, label, event)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(label, event)
        return child
