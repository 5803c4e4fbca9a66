"""The media example of the microservices post: videos, and the worker that chunks them from
the ``video-chunking`` queue of the messaging domain."""

from app.domain import Domain, KeyPattern
from app.videos.chunker import CHUNKER
from app.videos.router import router

DOMAIN = Domain(
    name="videos",
    routers=[router],
    queue_workers=[CHUNKER],
    keys=[
        KeyPattern("video:*", "read-write", "videos (one hash each)"),
        KeyPattern(
            "{queue:video-chunking}:*", "read-write", "the chunking queue (through messaging)"
        ),
        # Messages minted in the queue's slot carry its slot tag, and so do their traces.
        KeyPattern("{79h}:trace:*", "read-write", "the chunking jobs' traces"),
    ],
    commands=[
        "+evalsha",
        "+script|load",
        "+hgetall",
        # Run by the video script.
        "+hsetnx",
        "+hset",
        "+hget",
        # Run by the queue script (app.messaging).
        "+time",
        "+get",
        "+set",
        "+exists",
        "+del",
        "+expire",
        "+hmget",
        "+hdel",
        "+lpush",
        "+rpush",
        "+lpop",
        "+lrange",
        "+llen",
        "+zadd",
        "+zrem",
        "+zpopmin",
        "+zrangebyscore",
        "+zcard",
    ],
)
