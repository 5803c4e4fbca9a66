"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import RedisDep, WorkersDep
from app.redis import cluster_state, describe
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
async def read_readiness(store: RedisDep, workers: WorkersDep) -> JSONResponse:
    """Answer 200 when Redis is reachable with cluster_state ok and the workers run, else 503
    naming the problem: what a load balancer's health check should ask."""
    try:
        state = await asyncio.wait_for(cluster_state(store), READY_CHECK_TIMEOUT_S)
    except Exception as exc:
        state = f"redis unreachable: {describe(exc)}"
    problem = "" if state == "ok" else state
    if not problem and workers is not None:
        problem = workers.problem()
    if problem:
        return JSONResponse({"message": problem}, status_code=503)
    return JSONResponse({"message": "ready"})
