"""Fixtures of the messaging tests: the app without its workers, its HTTP client and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.lifespan import AppState
from app.messaging.broker import Broker
from tests.conftest import running_app, with_workers


@pytest.fixture
def quiet_settings(settings: Settings) -> Settings:
    """Settings without workers (the chunking worker would take jobs from the test's queues)."""
    return with_workers(settings, enabled=False)


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
