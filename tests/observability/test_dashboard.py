"""The live dashboard: its data through the ASGI app, and the page in a real headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.local_cluster import LocalCluster
from tests.browser import OFFLINE_FLAGS, Page, open_page
from tests.conftest import PROJECT_ROOT, make_settings, running_app

SCREENSHOT = PROJECT_ROOT / "docs" / "dashboard.png"
# Set to 1 to write docs/dashboard.png from a page that has seen some traffic.
SCREENSHOT_ENV = "UPDATE_SCREENSHOT"


@pytest.fixture
def settings(cluster: LocalCluster) -> Settings:
    # Values read from Redis fresh at every look: the tests see their traffic at once.
    fresh = make_settings(cluster.url)
    return fresh.model_copy(
        update={"metrics": fresh.metrics.model_copy(update={"state_cache_s": 0.0})}
    )


def queue_name(prefix: str = "dash") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_queue(http: httpx.AsyncClient, name: str) -> None:
    answer = await http.put(f"/queues/{name}", json={"visibility_timeout_s": 60})
    assert answer.status_code == 201, answer.text


async def publish(http: httpx.AsyncClient, name: str, count: int) -> None:
    for n in range(count):
        answer = await http.post(f"/queues/{name}/messages", json={"body": {"n": n}})
        assert answer.status_code == 201, answer.text


async def data(http: httpx.AsyncClient, **params: int) -> dict[str, Any]:
    answer = await http.get("/dashboard/data", params=params)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def queue_row(found: dict[str, Any], name: str) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {q["name"]: q for q in found["queues"]["items"]}
    assert name in rows, sorted(rows)
    return rows[name]


async def test_the_data_shows_the_cluster_the_pipeline_a_queue_and_the_api(
    settings: Settings,
) -> None:
    name = queue_name()
    topic = queue_name("topic")
    user = f"dash-reader-{uuid.uuid4().hex}"
    async with running_app(settings) as (http, _state):
        await create_queue(http, name)
        assert (await http.put(f"/topics/{topic}", json={})).status_code == 201
        assert (await http.put(f"/topics/{topic}/groups/billing", json={})).status_code == 201
        for n in range(2):
            sent = await http.post(f"/topics/{topic}/messages", json={"body": {"n": n}})
            assert sent.status_code == 201, sent.text
        await publish(http, name, 5)
        received = await http.post(f"/queues/{name}/receive", json={"max": 2})
        assert len(received.json()["messages"]) == 2
        assert (await http.post(f"/profile/{user}", json={"a": "1"})).status_code == 201
        for _ in range(3):
            assert (await http.get(f"/profile/{user}")).status_code == 200
        assert (await http.get(f"/profile/{uuid.uuid4().hex}")).status_code == 404

        deadline = time.monotonic() + 15
        while True:  # the aggregator counts the reads a moment later
            found = await data(http)
            top = found["pipeline"]["top_profiles"] or []
            if {"user": user, "reads": 3} in top or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

    cluster = found["cluster"]
    assert cluster["shards"] == 3
    nodes = cluster["nodes"]
    assert len(nodes) == 6
    assert all(n["up"] and n["memory_bytes"] > 0 and n["ops_per_s"] >= 0 for n in nodes)
    primaries = {n["node"] for n in nodes if n["role"] == "primary"}
    assert len(primaries) == 3
    # Every replica names its shard's primary.
    assert {n["shard"] for n in nodes if n["role"] == "replica"} == primaries

    pipeline = found["pipeline"]
    assert pipeline["stream"]["stream"] == "profile:events"
    assert pipeline["stream"]["length"] >= 4  # the create and three reads
    assert [g["group"] for g in pipeline["stream"]["groups"]]
    assert pipeline["applied_total"] >= 4
    assert {"user": user, "reads": 3} in pipeline["top_profiles"]

    queue = queue_row(found, name)
    assert (queue["ready"], queue["in_flight"], queue["delayed"], queue["dead"]) == (3, 2, 0, 0)
    assert queue["events"]["published"] == 5
    assert queue["events"]["delivered"] == 2
    assert found["queues"]["known"] >= 1
    assert found["queues"]["events"]["published"] >= 5

    topics = {t["name"]: t for t in found["topics"]["items"]}
    assert (topics[topic]["length"], topics[topic]["lag"], topics[topic]["pending"]) == (2, 2, 0)
    assert [g["group"] for g in topics[topic]["groups"]] == ["billing"]
    assert topics[topic]["events"]["published"] == 2

    api = found["api"]
    assert api["requests"]["2xx"] >= 15
    assert api["requests"]["4xx"] >= 1
    routes = {(r["method"], r["route"]): r for r in api["routes"]}
    assert routes["GET", "/profile/{user}"]["requests"] >= 4
    # The dashboard's own polling is not the API's traffic.
    assert not any(route == "/dashboard/data" for _m, route in routes)
    bounds = [le for le, _count in api["buckets"]]
    assert bounds[-1] is None
    assert bounds[:-1] == sorted(bounds[:-1])
    counts = [count for _le, count in api["buckets"]]
    assert counts == sorted(counts)
    assert counts[-1] == sum(r["requests"] for r in api["routes"])


async def test_queues_come_deepest_first_and_paged(settings: Settings) -> None:
    names = [queue_name("page") for _ in range(3)]
    async with running_app(settings) as (http, _state):
        for depth, name in enumerate(names, start=1):
            await create_queue(http, name)
            await publish(http, name, depth)
        first = await data(http, queues_limit=2)
        second = await data(http, queues_offset=2, queues_limit=2)
        for params in (
            {"queues_offset": -1},
            {"queues_limit": 0},
            {"queues_limit": 101},
            {"topics_offset": -1},
            {"topics_limit": "x"},
        ):
            refused = await http.get("/dashboard/data", params=params)
            assert refused.status_code == 422, params
            assert refused.headers["content-type"] == "application/json"
            assert refused.json()["errors"][0]["loc"] == ["query", next(iter(params))]

    assert [q["name"] for q in first["queues"]["items"]] == [names[2], names[1]]
    assert [q["name"] for q in second["queues"]["items"]] == [names[0]]
    assert first["queues"]["read"] == second["queues"]["read"] == 3
    assert (first["queues"]["offset"], first["queues"]["limit"]) == (0, 2)


async def test_the_page_is_self_contained_and_out_of_the_schema(settings: Settings) -> None:
    async with running_app(settings) as (http, _state):
        page = await http.get("/dashboard")
        schema = (await http.get("/openapi.json")).json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    # The nonce of the policy is the one of the page's script and style.
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert page.text.count(f'nonce="{nonce}"') == 2
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page.text
    assert not any(path.startswith("/dashboard") for path in schema["paths"])


async def test_disabled_metrics_disable_the_dashboard(settings: Settings) -> None:
    off = settings.model_copy(
        update={"metrics": settings.metrics.model_copy(update={"enabled": False})}
    )
    async with running_app(off) as (http, _state):
        assert (await http.get("/dashboard")).status_code == 404
        assert (await http.get("/dashboard/data")).status_code == 404


# Installed before the page's own script: its errors and any Content-Security-Policy violation.
WATCH_ERRORS = """
window.pageErrors = [];
addEventListener("error", (e) => pageErrors.push(String(e.message)));
addEventListener("securitypolicyviolation", (e) => pageErrors.push("CSP: " + e.violatedDirective));
"""


def cell(name: str, column: str) -> str:
    """Return a JavaScript expression: the text of a queue's cell, or undefined."""
    row = f"tr[data-queue={json.dumps(name)}]"
    return f"document.querySelector({json.dumps(row + ' td.' + column)})?.textContent"


@pytest.mark.slow
async def test_the_dashboard_in_a_real_browser(served: str) -> None:
    name = queue_name()
    user = f"dash-browser-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=served) as http, open_page(*OFFLINE_FLAGS) as page:
        await create_queue(http, name)
        await publish(http, name, 2)
        assert (await http.post(f"/profile/{user}", json={"a": "1"})).status_code == 201
        await page.send("Network.enable")
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=WATCH_ERRORS)
        await page.goto(f"{served}/dashboard")
        await page.wait_for(f"{cell(name, 'ready')} === '2'")
        assert "profile:events" in await page.text("#pipeline")
        await page.wait_for("document.querySelectorAll('#nodes tbody tr').length === 6")
        assert "6/6 nodes up" in await page.text("#nodes-pill")
        await page.evaluate("window.loadedOnce = true")

        await publish(http, name, 3)
        await http.post(f"/queues/{name}/receive", json={"max": 1})
        await page.wait_for(f"{cell(name, 'ready')} === '4' && {cell(name, 'in-flight')} === '1'")
        # Updated in place: the same document, no reload.
        assert await page.evaluate("window.loadedOnce") is True
        # The charts draw once two samples exist.
        await page.wait_for("document.querySelectorAll('#chart-requests path.line').length === 1")
        assert "live" in await page.text("#status")
        assert await page.evaluate("window.pageErrors") == []

    assert any(url.startswith(f"{served}/dashboard/data?") for url in page.requested)
    outside = [u for u in page.requested if not u.startswith((served + "/", "data:"))]
    assert outside == []


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(SCREENSHOT_ENV), reason=f"{SCREENSHOT_ENV}=1 writes it")
async def test_update_the_screenshot(served: str) -> None:
    """Write docs/dashboard.png: the page after half a minute of mixed traffic."""
    async with httpx.AsyncClient(base_url=served) as http, open_page(*OFFLINE_FLAGS) as page:
        queues = ["emails", "thumbnails", "invoices", "webhooks"]
        for name in queues:
            await create_queue(http, name)
        # Messages that fail once are dead-lettered here.
        await http.put("/queues/payments", json={"max_deliveries": 1})
        await publish(http, "payments", 4)
        for message in (await http.post("/queues/payments/receive", json={"max": 2})).json()[
            "messages"
        ]:
            await http.post(
                f"/queues/payments/messages/{message['id']}/nack",
                json={"receipt": message["receipt"]},
            )
        await http.put("/topics/orders", json={})
        for group in ("billing", "analytics"):
            await http.put(f"/topics/orders/groups/{group}", json={})
        users = [f"user-{n}" for n in range(12)]
        for user in users:
            await http.post(f"/profile/{user}", json={"name": user})
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=1440,
            height=1500,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=WATCH_ERRORS)
        await page.goto(f"{served}/dashboard")
        traffic = asyncio.create_task(_traffic(http, queues, users))
        try:
            await asyncio.sleep(float(os.environ.get("SCREENSHOT_AFTER_S", "40")))
        finally:
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
        assert await page.evaluate("window.pageErrors") == []
        await _screenshot(page, SCREENSHOT)


async def _traffic(http: httpx.AsyncClient, queues: list[str], users: list[str]) -> None:
    tick = 0
    while True:
        tick += 1
        for n, user in enumerate(users):
            for _ in range(max(1, 12 - n) if tick % 2 else 1):
                await http.get(f"/profile/{user}")
        for n, name in enumerate(queues):
            await publish(http, name, 1 + (tick + n) % 4)
            received = (await http.post(f"/queues/{name}/receive", json={"max": 2})).json()
            for message in received["messages"][: 1 + n % 2]:
                await http.post(
                    f"/queues/{name}/messages/{message['id']}/ack",
                    json={"receipt": message["receipt"]},
                )
        await http.post("/topics/orders/messages", json={"body": {"tick": tick}})
        got = (await http.post("/topics/orders/groups/billing/receive", json={"max": 5})).json()
        for message in got["messages"]:
            await http.post(
                f"/topics/orders/groups/billing/messages/{message['id']}/ack",
                json={"receipt": message["receipt"]},
            )
        await http.get(f"/profile/missing-{tick}")
        await asyncio.sleep(0.2)


async def _screenshot(page: Page, path: Path) -> None:
    shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
