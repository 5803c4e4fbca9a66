"""The seed's session flow in a real headless browser: form, type a name, submit, see it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.browser import open_page


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


@pytest.mark.slow
async def test_the_session_form_in_a_real_browser(served: str) -> None:
    async with open_page() as page:
        await page.goto(f"{served}/session/save")
        assert "Save your name in the session" in await page.text("h1")

        await page.type_into("#user_name", "Ana Lúcia")
        await page.click("#save")
        await page.wait_for(
            "location.pathname === '/session' && document.readyState === 'complete'"
        )
        assert await page.text("#user-name") == "Ana Lúcia"
        # The cookie is HttpOnly: the page's scripts cannot read it.
        assert await page.evaluate("document.cookie") == ""

        await page.goto(f"{served}/session/save")
        assert await page.text("#current-user-name") == "Ana Lúcia"

        await page.goto(f"{served}/session")
        await page.click("#logout")
        await page.wait_for("document.querySelector('#no-user-name') !== null")
