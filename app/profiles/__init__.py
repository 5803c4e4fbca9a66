"""The profile service (the seeds' /profile/<user>): profiles on hashes, every operation an
event on ``profile:events``, and the aggregator that counts reads from those events.

Public to other domains: ``ranked_by_reads`` and ``existing`` (reporting reads the counts).
"""

from app.domain import Domain, KeyPattern
from app.profiles.aggregator import AGGREGATOR
from app.profiles.metrics import gauges
from app.profiles.router import router
from app.profiles.service import existing, ranked_by_reads

__all__ = ["DOMAIN", "existing", "ranked_by_reads"]

DOMAIN = Domain(
    name="profiles",
    routers=[router],
    consumers=[AGGREGATOR],
    gauges=gauges,
    keys=[
        KeyPattern("profile:*", "read-write", "profiles, and the event stream profile:events"),
        KeyPattern(
            "{profile:*}:*",
            "read-write",
            "a profile's generation and request markers; the aggregator's read counts and "
            "generations and the stream writer's batch markers ({profile:events}:...)",
        ),
    ],
    commands=[
        "+evalsha",
        "+script|load",
        # Run by the profile scripts and the stream writer's script.
        "+get",
        "+set",
        "+exists",
        "+hset",
        "+hgetall",
        "+incr",
        "+unlink",
        "+xadd",
        "+xrange",
        # The aggregator: its consumer-group loop, and its script.
        "+xgroup|create",
        "+xreadgroup",
        "+xautoclaim",
        "+xack",
        "+hget",
        "+zadd",
        "+zincrby",
        "+zrem",
        # The listing of profiles by reads.
        "+zrevrange",
        # Its gauges: the stream's length, the group's lag and pending entries.
        "+xlen",
        "+xinfo|groups",
        "+xpending",
    ],
)
