"""The customer counters after known traffic, through the app against the real cluster."""

from __future__ import annotations

from app.config import Settings
from tests.conftest import running_app
from tests.customers.test_customers import DANILO, create
from tests.observability.scrape import delta, scrape, with_metrics


async def test_creates_and_deletes_are_counted_once_each(settings: Settings) -> None:
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        first, *_ = [await create(http, {"n": n}) for n in range(3)]
        for _ in range(2):  # a retry with its Idempotency-Key creates nothing more
            answer = await http.post("/customers", json=DANILO, headers={"Idempotency-Key": "c1"})
            assert answer.status_code == 201
        url = f"/customers/{first['id']}"
        for _ in range(2):
            deleted = await http.delete(url, headers={"Idempotency-Key": "d1"})
            assert deleted.status_code == 204
        assert (await http.delete(url)).status_code == 404
        after = await scrape(http)
    assert delta(after, before, "mdb_customers_created_total") == 4
    assert delta(after, before, "mdb_customers_deleted_total") == 1
