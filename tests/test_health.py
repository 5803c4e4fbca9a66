"""Liveness and readiness probes."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager

from app.config import Settings
from app.main import create_app
from workers.pool import WorkerPool


async def test_healthz(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"message": "ok"}


async def test_readyz_when_cluster_and_workers_are_up(client: httpx.AsyncClient) -> None:
    answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"message": "ready"}


async def test_readyz_is_503_when_workers_stopped(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            workers: WorkerPool = manager._state["workers"]
            await workers.stop()
            answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"message": "workers are not running"}


async def test_readyz_without_workers_checks_only_redis(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"workers": settings.workers.model_copy(update={"enabled": False})}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/readyz")).status_code == 200


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/nope")
    assert answer.status_code == 404
    assert answer.json() == {"message": "Not Found"}
