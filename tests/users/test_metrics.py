"""The user counter after known traffic, through the app against the real cluster."""

from __future__ import annotations

from app.config import Settings
from tests.conftest import running_app
from tests.observability.scrape import delta, scrape, with_metrics
from tests.users.test_users import ANA, save


async def test_users_created_are_counted(settings: Settings) -> None:
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        await save(http, ANA)
        await save(http, {**ANA, "user_name": "bo"})
        taken = await http.post("/user/save", json={**ANA, "email": "other@example.com"})
        assert taken.status_code == 409, taken.text
        after = await scrape(http)
    assert delta(after, before, "mdb_users_created_total") == 2
