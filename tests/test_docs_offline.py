"""Swagger UI and ReDoc in a real headless Chromium with no network but the service's own."""

from __future__ import annotations

import pytest

from tests.browser import OFFLINE_FLAGS, open_page


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
