"""Queues, topics and message traces on Redis (the microservices post's message bus).

Public to other domains (import them from ``app.messaging``, not its modules): ``Broker`` (the
lifespan builds one per process; ``BrokerDep`` in routes), ``Queue`` and what its steps take and
answer (``QueueCreate``, ``MessagePublish``, ``Delivery``, ``QueueNotFound``), ``from_ms``, and
``channel_overview`` (the queues and topics by depth, for the dashboard).
"""

from app.domain import Context, Domain, KeyPattern
from app.messaging import keys
from app.messaging.broker import Broker
from app.messaging.dependencies import BrokerDep
from app.messaging.exceptions import QueueNotFound
from app.messaging.migrate import LAYOUT_KEY, check_layout, migrate_layout
from app.messaging.overview import ChannelPage, ChannelRow, channel_overview, gauges
from app.messaging.queues import Queue
from app.messaging.router import messages_router, queues_router, topics_router
from app.messaging.schemas import Delivery, MessagePublish, QueueCreate, from_ms

__all__ = [
    "DOMAIN",
    "QUEUE_COMMANDS",
    "Broker",
    "BrokerDep",
    "ChannelPage",
    "ChannelRow",
    "Delivery",
    "MessagePublish",
    "Queue",
    "QueueCreate",
    "QueueNotFound",
    "channel_overview",
    "check_layout",
    "from_ms",
    "migrate_layout",
    "queue_key_patterns",
]


def queue_key_patterns(name: str) -> list[KeyPattern]:
    """Return the keys a user of the queue ``name`` touches: the queue's, its traces, the
    registry its create adds it to, and the layout mark ``check_layout`` reads."""
    prefix = keys.queue_prefix(name)
    return [
        KeyPattern(keys.QUEUE_REGISTRY, "read-write", "the registry of queues"),
        KeyPattern(keys.TOPIC_REGISTRY, "read", "the registry of topics (the layout check)"),
        KeyPattern(LAYOUT_KEY, "read-write", "the layout of the messaging data"),
        KeyPattern(prefix + "*", "read-write", f"the queue {name}"),
        # Messages minted in the queue's slot carry its slot tag, and so do their traces.
        *(
            KeyPattern(key, "read-write", f"traces of messages in the slot of {name}")
            for key in keys.trace_keys(keys.slot_of(prefix))
        ),
    ]


# What a user of queues runs, here or through another domain (the video chunker): the queue
# script and the commands inside it, and the trace script (ZSCORE, HGET).
QUEUE_COMMANDS = (
    "+evalsha",
    "+script|load",
    "+time",
    "+get",
    "+set",
    "+hget",
    "+hmget",
    "+hset",
    "+hdel",
    "+hexists",
    "+hincrby",
    "+lpush",
    "+rpush",
    "+lpop",
    "+lrange",
    "+llen",
    "+zadd",
    "+zrem",
    "+zcard",
    "+zpopmin",
    "+zrange",
    "+zrangebyscore",
    "+zscore",
)
# What topic.lua runs besides those (and XINFO GROUPS before reading a topic).
TOPIC_COMMANDS = (
    "+exists",
    "+hlen",
    "+hgetall",
    "+xadd",
    "+xrange",
    "+xlen",
    "+xtrim",
    "+xack",
    "+xpending",
    "+xreadgroup",
    "+xgroup|create",
    "+xinfo|groups",
)


async def _setup(context: Context) -> None:
    """Refuse to serve messaging data laid out by an older version (migrate.py)."""
    await check_layout(context.store)


DOMAIN = Domain(
    name="messaging",
    routers=[queues_router, topics_router, messages_router],
    keys=[
        KeyPattern(
            "{queue:*}:*",
            "read-write",
            "a queue's config, ready, delayed, in-flight and dead-letter keys, its message "
            "bodies and states and its dedupe, receive and redrive markers",
        ),
        KeyPattern(
            "{topic:*}:*",
            "read-write",
            "a topic's config, stream and holds, its groups' leases, held entries and dead "
            "letters, its markers",
        ),
        KeyPattern("{*}:traces", "read-write", "message traces, in the slot their id names"),
        KeyPattern("{*}:trace-expiry", "read-write", "when each finished trace goes"),
        KeyPattern(keys.QUEUE_REGISTRY, "read-write", "the queues' names, for the metrics"),
        KeyPattern(keys.TOPIC_REGISTRY, "read-write", "the topics' names, for the metrics"),
        KeyPattern(LAYOUT_KEY, "read-write", "the layout of the messaging data (migrate.py)"),
    ],
    commands=[*QUEUE_COMMANDS, *TOPIC_COMMANDS],
    setup=_setup,
    gauges=gauges,
)
