"""The media example of the microservices post: videos, and the worker that chunks them from
the ``video-chunking`` queue of the messaging domain."""

from app.domain import Context, Domain, KeyPattern
from app.messaging import QUEUE_COMMANDS, check_layout, queue_key_patterns
from app.videos import keys
from app.videos.chunker import CHUNKER
from app.videos.router import router


async def _setup(context: Context) -> None:
    """Refuse to chunk from a queue laid out by an older version (see app.messaging)."""
    await check_layout(context.store)


DOMAIN = Domain(
    name="videos",
    routers=[router],
    queue_workers=[CHUNKER],
    shares_cluster_with=["messaging"],
    setup=_setup,
    keys=[
        KeyPattern("video:*", "read-write", "videos (one hash each)"),
        *queue_key_patterns(keys.CHUNKING_QUEUE),
    ],
    commands=[
        "+hgetall",
        # Run by the video script, with HSET and HGET (among the queue's).
        "+hsetnx",
        *QUEUE_COMMANDS,
    ],
)
