"""Queues, topics and message traces on Redis (the microservices post's message bus).

Public to other domains (import them from ``app.messaging``, not its modules): ``Broker`` (the
lifespan builds one per process; ``BrokerDep`` in routes), ``Queue`` and what its steps take and
answer (``QueueCreate``, ``MessagePublish``, ``Delivery``, ``QueueNotFound``), and ``from_ms``.
"""

from app.domain import Domain, KeyPattern
from app.messaging.broker import Broker
from app.messaging.dependencies import BrokerDep
from app.messaging.exceptions import QueueNotFound
from app.messaging.queues import Queue
from app.messaging.router import messages_router, queues_router, topics_router
from app.messaging.schemas import Delivery, MessagePublish, QueueCreate, from_ms

__all__ = [
    "DOMAIN",
    "Broker",
    "BrokerDep",
    "Delivery",
    "MessagePublish",
    "Queue",
    "QueueCreate",
    "QueueNotFound",
    "from_ms",
]

DOMAIN = Domain(
    name="messaging",
    routers=[queues_router, topics_router, messages_router],
    keys=[
        KeyPattern(
            "{queue:*}:*",
            "read-write",
            "a queue's config, ready, delayed, in-flight and dead-letter keys, its message "
            "hashes and its dedupe, receive and redrive markers",
        ),
        KeyPattern(
            "{topic:*}:*",
            "read-write",
            "a topic's config and stream, its groups' leases and dead letters, its markers",
        ),
        KeyPattern("{*}:trace:*", "read-write", "message traces, in the slot their id names"),
    ],
    commands=[
        "+evalsha",
        "+script|load",
        # Run by queue.lua and topic.lua, and LRANGE also to read a trace.
        "+time",
        "+exists",
        "+del",
        "+expire",
        "+get",
        "+set",
        "+hget",
        "+hmget",
        "+hset",
        "+hdel",
        "+hlen",
        "+lpush",
        "+rpush",
        "+lpop",
        "+lrange",
        "+llen",
        "+zadd",
        "+zrem",
        "+zcard",
        "+zscore",
        "+zpopmin",
        "+zrangebyscore",
        "+xadd",
        "+xrange",
        "+xlen",
        "+xtrim",
        "+xack",
        "+xpending",
        "+xreadgroup",
        "+xgroup|create",
        "+xinfo|groups",
    ],
)
