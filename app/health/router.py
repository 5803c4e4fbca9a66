"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import StoresDep, WorkersDep
from app.redis import RedisStore, cluster_state, describe
from app.schemas import Message

READY_CHECK_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness",
    responses={200: {"content": {"application/json": {"example": {"message": "ok"}}}}},
)
async def read_health() -> Message:
    """Answer while the process is alive (it touches no database)."""
    return Message(message="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Message,
    responses={
        200: {"content": {"application/json": {"example": {"message": "ready"}}}},
        503: {
            "model": Message,
            "description": "Not ready, and why",
            "content": {
                "application/json": {
                    "example": {"message": "node 127.0.0.1:7100 reports cluster_state=fail"}
                }
            },
        },
    },
)
async def read_readiness(stores: StoresDep, workers: WorkersDep) -> JSONResponse:
    """Answer 200 when Redis is reachable with cluster_state ok (every cluster the process's
    services use) and the workers run, else 503 naming the problem: what a load balancer's
    health check should ask."""
    states = await asyncio.gather(*(_state(store) for store in stores))
    problem = next((state for state in states if state != "ok"), "")
    if not problem and workers is not None:
        problem = workers.problem()
    if problem:
        return JSONResponse({"message": problem}, status_code=503)
    return JSONResponse({"message": "ready"})


async def _state(store: RedisStore) -> str:
    try:
        return await asyncio.wait_for(cluster_state(store), READY_CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"redis unreachable: {describe(exc)}"
