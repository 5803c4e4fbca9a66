"""``GET /metrics``: the Prometheus text format, for every process of the service."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.errors import NotFound
from app.metrics import scrape_registry
from app.observability.state import StateCache

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Expose every metric: the processes' counters and histograms, and the Redis state."""
    state: StateCache | None = request.state.observability
    if state is None:
        raise NotFound("Metrics are disabled (metrics.enabled = false)")
    registry = scrape_registry([state.collector(await state.families())])
    # With several processes this reads their files: off the event loop.
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
