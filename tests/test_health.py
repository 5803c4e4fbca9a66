"""Liveness and readiness probes."""

from __future__ import annotations

import httpx

from app.config import Settings
from tests.conftest import make_settings, running_app


async def test_healthz(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"message": "ok"}


async def test_readyz_when_cluster_and_workers_are_up(client: httpx.AsyncClient) -> None:
    answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"message": "ready"}


async def test_readyz_is_503_when_workers_stopped(settings: Settings) -> None:
    async with running_app(settings) as (http, state):
        workers = state["workers"]
        assert workers is not None
        await workers.stop()
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"message": "workers are not running"}


async def test_readyz_without_workers_checks_only_redis(settings: Settings) -> None:
    without_workers = make_settings(settings.redis.url, enabled=False)
    async with running_app(without_workers) as (http, state):
        assert state["workers"] is None
        assert (await http.get("/readyz")).status_code == 200


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/nope")
    assert answer.status_code == 404
    assert answer.json() == {"message": "Not Found"}
