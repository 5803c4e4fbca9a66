"""Fixtures of the messaging tests: the app without its workers, its HTTP client and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.lifespan import AppState
from app.local_cluster import LocalCluster
from app.messaging.broker import Broker
from tests.conftest import make_settings, running_app


@pytest.fixture
def quiet_settings(cluster: LocalCluster) -> Settings:
    """Settings without workers (the chunking worker would take jobs from the test's queues)."""
    return make_settings(cluster.url, enabled=False)


@pytest.fixture
async def app(quiet_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    async with running_app(quiet_settings) as running:
        yield running


@pytest.fixture
def http(app: tuple[httpx.AsyncClient, AppState]) -> httpx.AsyncClient:
    return app[0]


@pytest.fixture
def broker(app: tuple[httpx.AsyncClient, AppState]) -> Broker:
    return app[1]["broker"]
