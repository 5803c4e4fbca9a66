"""Observability: ``GET /metrics`` for Prometheus and the live dashboard at ``/dashboard``.

Process metrics (requests, Redis commands, retries, domain counters) are defined in
``app.metrics`` and recorded where things happen; values that live in Redis (stream lag, queue
depths, the cluster's nodes) are read at scrape time by ``StateCache``, which asks every
domain's ``gauges`` hook. docs/observability.md lists every metric.
"""

from app.domain import Context, Domain
from app.observability.dashboard import dashboard_router
from app.observability.router import router
from app.observability.state import StateCache

__all__ = ["DOMAIN", "StateCache"]


async def _setup(context: Context) -> StateCache | None:
    settings = context.settings.metrics
    if not settings.enabled:
        return None
    return StateCache(context, max_age_s=settings.state_cache_s)


DOMAIN = Domain(
    name="observability",
    routers=[router, dashboard_router],
    always=True,
    setup=_setup,
    # Besides each domain's gauges (run with that domain's access and store): every node's
    # INFO. The dashboard's top profiles are read as the reporting domain reads them, with its
    # store, when reporting or profiles runs in the process.
    commands=["+info", "+cluster|slots"],
)
