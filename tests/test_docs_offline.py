"""Swagger UI and ReDoc in a real headless Chromium with no network but the service's own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.browser import OFFLINE_FLAGS, open_page


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[str]:
    """Serve the app over real HTTP on a free loopback port; yield its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        assert not task.done(), "uvicorn stopped at start-up"
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    listener.close()


def local(url: str, served: str) -> bool:
    """Return whether the page's request stays on the service (inline data is no request)."""
    return url.startswith((served + "/", "data:", "blob:"))


@pytest.mark.slow
async def test_swagger_ui_shows_every_operation_offline(served: str) -> None:
    async with open_page(*OFFLINE_FLAGS) as page:
        await page.send("Network.enable")
        await page.goto(f"{served}/docs")
        shown = await page.wait_for(
            "document.querySelectorAll('.opblock').length >= 40 && "
            "document.querySelectorAll('.opblock').length",
            timeout_s=20,
        )
        assert "/profile/{user}" in await page.text(".swagger-ui")
        assert "/queues/{name}/receive" in await page.text(".swagger-ui")
        assert shown >= 40
        assert page.requested, "the page's own requests were seen"
        assert [url for url in page.requested if not local(url, served)] == []


@pytest.mark.slow
async def test_redoc_shows_the_operations_offline(served: str) -> None:
    async with open_page(*OFFLINE_FLAGS) as page:
        await page.send("Network.enable")
        await page.goto(f"{served}/redoc")
        await page.wait_for("document.body.innerText.includes('/profile/{user}')", timeout_s=30)
        assert page.requested, "the page's own requests were seen"
        assert [url for url in page.requested if not local(url, served)] == []
