"""Liveness and readiness probes: the process, the cluster's state, the workers."""

from app.domain import Domain
from app.health.router import router

DOMAIN = Domain(
    name="health",
    routers=[router],
    always=True,
    commands=["+cluster|info", "+ping"],
)
