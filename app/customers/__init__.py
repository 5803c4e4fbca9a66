"""The customer service of the launch post: customers as hashes, with types, versions, ETags
and paging across the shards."""

from app.customers.router import router
from app.domain import Domain, KeyPattern

DOMAIN = Domain(
    name="customers",
    routers=[router],
    keys=[
        KeyPattern("customer:*", "read-write", "customers (the launch post's hashes)"),
        KeyPattern(
            "{customer:*}:*", "read-write", "a customer's meta (version, types) and request markers"
        ),
        KeyPattern("customers:slots", "read-write", "the slots that hold customers"),
        KeyPattern("customers:index:*", "read-write", "the customer ids of each slot"),
    ],
    commands=[
        "+evalsha",
        # The read script (read-only), on primaries and, with redis.read_from_replicas, replicas.
        "+evalsha_ro",
        "+script|load",
        "+zadd",
        "+zrange",
        # Run by the customer scripts.
        "+zrem",
        "+get",
        "+set",
        "+exists",
        "+del",
        "+hset",
        "+hget",
        "+hgetall",
        "+hdel",
    ],
)
