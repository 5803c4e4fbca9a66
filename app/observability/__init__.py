"""Observability: ``GET /metrics`` for Prometheus and the live dashboard at ``/dashboard``.

Process metrics (requests, Redis commands, retries, domain counters) are defined in
``app.metrics`` and recorded where things happen; values that live in Redis (stream lag, queue
depths, the cluster's nodes) are read at scrape time by ``StateCache``, which asks every
domain's ``gauges`` hook. docs/observability.md lists every metric.
"""

from app.domain import Context, Domain, KeyPattern
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
    setup=_setup,
    # Besides each domain's gauges (run with that domain's access): every node's INFO, and the
    # dashboard's top profiles (as the reporting domain reads them).
    keys=[
        KeyPattern("{profile:events}:read-counts", "read", "the top profiles, for the dashboard"),
        KeyPattern("profile:*", "read", "whether a top profile still exists"),
    ],
    commands=["+info", "+cluster|slots", "+zrevrange", "+exists"],
)
