"""The seed's session flow in a real headless browser: form, type a name, submit, see it."""

from __future__ import annotations

import pytest

from tests.browser import open_page


@pytest.mark.default_engine_only
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
