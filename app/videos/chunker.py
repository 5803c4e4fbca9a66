"""The chunking worker of the media example: consumes ``video-chunking`` jobs.

The video domain declares it (``CHUNKER``); the queue-worker loop in ``workers`` runs it.
"""

from __future__ import annotations

from app.domain import Context, QueueJob, QueueWorkerSpec
from app.messaging import Broker, Delivery, QueueNotFound
from app.videos import keys, service


def chunking_job(context: Context) -> QueueJob[Delivery]:
    """Return the chunking queue and the handler that chunks each job's video."""
    chunk_duration_s = context.settings.videos.chunk_duration_s

    async def chunk(job: Delivery) -> int:
        return await service.chunk_video(
            store=context.store, job=job, chunk_duration_s=chunk_duration_s
        )

    return QueueJob(
        queue=context.need(Broker).queue(keys.CHUNKING_QUEUE), handle=chunk, missing=QueueNotFound
    )


CHUNKER = QueueWorkerSpec(
    name="chunker",
    job=chunking_job,
    count=lambda settings: settings.videos.chunking_workers,
    concurrency=lambda settings: settings.videos.chunking_concurrency,
)
