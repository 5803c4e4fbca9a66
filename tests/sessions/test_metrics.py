"""The session counters after known traffic, through the app against the real cluster."""

from __future__ import annotations

import uuid

from app.config import Settings
from tests.conftest import running_app
from tests.observability.scrape import delta, scrape, with_metrics
from tests.sessions.test_sessions import csrf_from, log_in


async def test_sessions_logins_and_endings_are_counted(settings: Settings) -> None:
    user = f"metrics-{uuid.uuid4().hex}"
    async with (
        running_app(with_metrics(settings, state_cache_s=0)) as (first, _state),
        running_app(settings) as (second, _),
        running_app(settings) as (third, _),
    ):
        before = await scrape(first)
        # An anonymous session stored by its first write, then replaced by a login.
        token = (await first.get("/session/data")).json()["csrf_token"]
        written = await first.patch("/session/data", json={"a": 1}, headers={"X-CSRF-Token": token})
        assert written.status_code == 200
        again = await first.patch("/session/data", json={"b": 2}, headers={"X-CSRF-Token": token})
        assert again.status_code == 200
        await log_in(first, user)
        # A login from a session never stored: nothing stored is ended.
        await log_in(second, user)
        await log_in(third, user)
        page = await first.get("/session")
        logout = await first.post("/session/logout", data={"csrf_token": csrf_from(page.text)})
        assert logout.status_code == 303
        page = await second.get("/session")
        everywhere = await second.post(
            "/session/logout-everywhere", data={"csrf_token": csrf_from(page.text)}
        )
        assert everywhere.status_code == 303
        after = await scrape(first)
    assert delta(after, before, "mdb_session_logins_total") == 3
    assert delta(after, before, "mdb_sessions_created_total") == 4
    assert delta(after, before, "mdb_sessions_ended_total", reason="login") == 1
    assert delta(after, before, "mdb_sessions_ended_total", reason="logout") == 1
    assert delta(after, before, "mdb_sessions_ended_total", reason="logout_everywhere") == 2
