"""GET /metrics against the real cluster: after known traffic it says exactly what happened."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.local_cluster import LocalCluster
from tests.conftest import eventually, make_settings, running_app
from tests.observability.scrape import (
    delta,
    label_values,
    scrape,
    series,
    value,
    with_metrics,
)
from tests.service import Service

PROFILE_ROUTE = "/profile/{user}"


async def test_requests_are_counted_by_route_template_and_status_class(
    settings: Settings,
) -> None:
    users = [f"metrics-{uuid.uuid4().hex}" for _ in range(3)]
    async with running_app(settings) as (http, _state):
        before = await scrape(http)
        for user in users:
            assert (await http.post(f"/profile/{user}", json={"a": "1"})).status_code == 201
        for user in users + users[:2]:
            assert (await http.get(f"/profile/{user}")).status_code == 200
        missing = f"/no/such/{uuid.uuid4().hex}"
        assert (await http.get(missing)).status_code == 404
        assert (await http.get(f"/profile/{uuid.uuid4().hex}")).status_code == 404
        after = await scrape(http)
    get = {"method": "GET", "route": PROFILE_ROUTE}
    assert delta(after, before, "mdb_http_requests_total", **get, status="2xx") == 5
    assert delta(after, before, "mdb_http_requests_total", **get, status="4xx") == 1
    assert delta(after, before, "mdb_http_requests_total", method="POST", status="2xx") == 3
    assert delta(after, before, "mdb_http_requests_total", route="<unmatched>", status="4xx") == 1
    assert delta(after, before, "mdb_http_request_duration_seconds_count", **get) == 6
    assert value(after, "mdb_http_request_duration_seconds_bucket", **get, le="+Inf") >= 6
    # Label values stay bounded: no user name, id or raw path becomes one.
    seen = label_values(after)
    assert not any(user in v for user in users for v in seen)
    assert missing not in seen
    assert all(not v.startswith("/profile/") or v == PROFILE_ROUTE for v in seen)


async def test_every_response_carries_a_request_id(settings: Settings) -> None:
    async with running_app(settings) as (http, _state):
        kept = await http.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
        assert kept.headers["x-request-id"] == "trace-abc.123"
        for insane in ("x" * 200, "has space", "semi;colon"):
            replaced = await http.get("/healthz", headers={"X-Request-ID": insane})
            assert replaced.headers["x-request-id"] != insane
            assert len(replaced.headers["x-request-id"]) == 32
        fresh = [(await http.get("/healthz")).headers["x-request-id"] for _ in range(2)]
        assert fresh[0] != fresh[1]
        refused = await http.get("/metrics", headers={"content-length": "x"})
        assert "x-request-id" in refused.headers


async def test_the_event_stream_metrics_follow_the_aggregator(
    settings: Settings, redis: RedisCluster
) -> None:
    user = f"reader-{uuid.uuid4().hex}"
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        assert (await http.post(f"/profile/{user}", json={"a": "1"})).status_code == 201
        for _ in range(10):
            assert (await http.get(f"/profile/{user}")).status_code == 200
        stream = {"stream": "profile:events"}
        group = {**stream, "group": "profile-aggregator"}

        async def caught_up() -> bool:
            now = await scrape(http)
            return (
                value(now, "mdb_stream_group_lag", **group) == 0
                and value(now, "mdb_stream_group_pending", **group) == 0
                and delta(now, before, "mdb_profile_events_applied_total", **stream) == 11
            )

        await eventually(caught_up, what="the aggregator's lag back to 0")
        after = await scrape(http)
    assert value(after, "mdb_stream_length", **stream) == await redis.xlen("profile:events")
    assert value(after, "mdb_stream_group_oldest_pending_age_seconds", **group) == 0
    assert value(after, "mdb_stream_group_consumers", **group) >= 1


async def test_redis_and_cluster_metrics(
    settings: Settings, cluster: LocalCluster, redis: RedisCluster
) -> None:
    async with running_app(settings) as (http, _state):
        before = await scrape(http)
        # Every script missing from the nodes' caches: loading one is not an error.
        await redis.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
        for n in range(5):
            answer = await http.post(f"/profile/cmd-{uuid.uuid4().hex}", json={"n": str(n)})
            assert answer.status_code == 201
        samples = await scrape(http)
    assert delta(samples, before, "mdb_redis_command_errors_total") == 0
    # The trips' start-up probe for JSON commands is answered "unknown command" here: an answer.
    assert value(samples, "mdb_redis_command_errors_total", command="JSON.GET") == 0
    assert value(samples, "mdb_redis_command_duration_seconds_count", command="EVALSHA") >= 5
    assert value(samples, "mdb_redis_pipeline_batch_commands_count") >= 5
    nodes = series(samples, "mdb_redis_cluster_node_info")
    assert sorted(n["role"] for n in nodes) == ["primary"] * 3 + ["replica"] * 3
    assert {n["node"] for n in nodes} == {f"127.0.0.1:{port}" for port in cluster.ports}
    primaries = {n["node"] for n in nodes if n["role"] == "primary"}
    assert {n["shard"] for n in nodes} == primaries
    assert primaries == {f"127.0.0.1:{port}" for port in cluster.primary_ports()}
    assert value(samples, "mdb_redis_cluster_shards") == 3
    for node in {n["node"] for n in nodes}:
        assert value(samples, "mdb_redis_node_up", node=node) == 1
        assert value(samples, "mdb_redis_node_memory_used_bytes", node=node) > 0
    assert series(samples, "mdb_build_info")[0]["version"]
    assert all(v == 1 for (n, _l), v in samples.items() if n == "mdb_metrics_state_up")


async def test_values_from_redis_are_cached_for_state_cache_s(settings: Settings) -> None:
    stream = {"stream": "profile:events"}
    async with running_app(with_metrics(settings, state_cache_s=300)) as (http, _state):
        first = value(await scrape(http), "mdb_stream_length", **stream)
        await http.post(f"/profile/cached-{uuid.uuid4().hex}", json={"a": "1"})
        assert value(await scrape(http), "mdb_stream_length", **stream) == first
    async with running_app(with_metrics(settings, state_cache_s=0)) as (http, _state):
        await http.post(f"/profile/cached-{uuid.uuid4().hex}", json={"a": "1"})
        assert value(await scrape(http), "mdb_stream_length", **stream) == first + 2


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    async with running_app(with_metrics(settings, enabled=False)) as (http, _state):
        answer = await http.get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["message"]


def test_metrics_are_not_in_the_openapi_schema(openapi: dict[str, Any]) -> None:
    assert not any(path.startswith(("/metrics", "/dashboard")) for path in openapi["paths"])


@pytest.mark.slow
async def test_several_processes_are_summed_and_redis_is_read_once(
    cluster: LocalCluster, redis: RedisCluster, tmp_path: Path
) -> None:
    files = tmp_path / "metrics"
    service = Service(
        tmp_path / "unused", redis_url=cluster.url, PROMETHEUS_MULTIPROC_DIR=str(files)
    )
    service.start("--workers", "2")
    try:
        users = [f"multi-{uuid.uuid4().hex}" for _ in range(4)]
        async with httpx.AsyncClient(base_url=service.url) as http:
            for user in users:
                assert (await http.post(f"/profile/{user}", json={"a": "1"})).status_code == 201

        async def read(turn: int) -> None:
            # A new connection per request, 8 at a time, so that both processes serve some.
            async with httpx.AsyncClient(base_url=service.url) as http:
                answer = await http.get(f"/profile/{users[turn % 4]}")
            assert answer.status_code == 200

        for first in range(0, 40, 8):
            await asyncio.gather(*(read(turn) for turn in range(first, first + 8)))
        length = await redis.xlen("profile:events")
        get = {"method": "GET", "route": PROFILE_ROUTE, "status": "2xx"}

        async def all_counted() -> bool:
            async with httpx.AsyncClient(base_url=service.url) as http:
                return value(await scrape(http), "mdb_http_requests_total", **get) == 40

        # Each process adds its counts to the shared files once a second (app.metrics).
        await eventually(all_counted, within_s=5, what="every process's requests counted")
        totals = set()
        for _ in range(8):
            async with httpx.AsyncClient(base_url=service.url) as http:
                samples = await scrape(http)
            totals.add(value(samples, "mdb_http_requests_total", **get))
            # Read from Redis by the answering process alone: never summed over processes.
            assert value(samples, "mdb_stream_length", stream="profile:events") <= length
            assert len(series(samples, "mdb_redis_cluster_node_info")) == 6
        assert totals == {40}, "every process's scrape shows the sum over processes"
        # ... and the sum is over several processes: each one's own file holds some of them.
        served = [
            sum(
                sample.value
                for family in MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
                for sample in family.samples
                if sample.name == "mdb_http_requests_total" and get.items() <= sample.labels.items()
            )
            for path in files.glob("counter_*.db")
        ]
        assert sum(served) == 40
        assert len([n for n in served if n > 0]) == 2, served
    finally:
        assert service.signal(signal.SIGTERM) == 0


@pytest.mark.slow
@pytest.mark.chaos
async def test_a_failed_node_shows_in_the_error_and_retry_metrics(
    cluster: LocalCluster,
) -> None:
    settings = make_settings(cluster.url)
    settings = settings.model_copy(
        update={
            "redis": settings.redis.model_copy(update={"retry_attempts": 30}),
            "metrics": settings.metrics.model_copy(update={"state_cache_s": 0}),
        }
    )
    primaries = cluster.primary_ports()
    victim = cluster.ports.index(primaries[0])
    victim_name = f"127.0.0.1:{primaries[0]}"
    async with running_app(settings) as (http, _state):
        before = await scrape(http)

        async def writer(index: int) -> None:
            for turn in range(40):
                answer = await http.post(f"/profile/f{index}-{turn}", json={"n": str(turn)})
                assert answer.status_code in (201, 503), answer.text
                await asyncio.sleep(0.05)

        writers = asyncio.gather(*(writer(i) for i in range(8)))
        await asyncio.sleep(0.3)
        cluster.kill_node(victim)
        await writers

        async def recovered() -> bool:
            now = await scrape(http)
            return delta(now, before, "mdb_redis_retried_operations_total", outcome="recovered") > 0

        # Operations caught by the failure (the aggregator's, the writers') end once a replica
        # has taken over.
        await eventually(recovered, within_s=20, what="a retried operation to recover")
        after = await scrape(http)
    try:
        assert delta(after, before, "mdb_redis_retries_total") > 0
        errors = delta(after, before, "mdb_redis_command_errors_total")
        assert errors > 0
        assert value(after, "mdb_redis_node_up", node=victim_name) == 0
        assert delta(after, before, "mdb_redis_failovers_noticed_total") >= 1
        new_primaries = {
            n["node"]
            for n in series(after, "mdb_redis_cluster_node_info")
            if n["role"] == "primary"
        }
        assert victim_name not in new_primaries
        assert value(after, "mdb_redis_cluster_shards") == 3
    finally:
        cluster.restart_node(victim)


async def test_a_stream_not_created_yet_is_not_an_error(settings: Settings) -> None:
    # Without workers nothing creates profile:events (nor a group) before the first event.
    quiet = settings.model_copy(
        update={"workers": settings.workers.model_copy(update={"enabled": False})}
    )
    async with running_app(with_metrics(quiet, state_cache_s=0)) as (http, _state):
        before = await scrape(http)
        after = await scrape(http)
    assert value(after, "mdb_metrics_state_up", source="profiles") == 1
    assert delta(after, before, "mdb_redis_command_errors_total") == 0
    assert series(after, "mdb_stream_length") == []
