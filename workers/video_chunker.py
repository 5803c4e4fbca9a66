"""The chunking worker of the media example: consumes ``video-chunking`` jobs."""

from __future__ import annotations

import functools

from app.config import VideoSettings
from app.messaging.broker import Broker
from app.messaging.schemas import Delivery
from app.videos import keys, service
from workers.queue_worker import QueueWorker


async def _chunk(broker: Broker, settings: VideoSettings, job: Delivery) -> int:
    return await service.chunk_video(
        store=broker.store, job=job, chunk_duration_s=settings.chunk_duration_s
    )


def chunking_worker(*, broker: Broker, settings: VideoSettings, consumer: str) -> QueueWorker:
    """Return a worker that chunks videos from the chunking queue as ``consumer``."""
    return QueueWorker(
        queue=broker.queue(keys.CHUNKING_QUEUE),
        consumer=consumer,
        handle=functools.partial(_chunk, broker, settings),
    )
