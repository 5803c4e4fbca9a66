"""Choosing the services a process runs, and a database per service: only their routes, docs
and workers; each service on its own cluster when configured so, never splitting services that
share data by design."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster

from app.config import ConfigError, ServiceSettings, Settings, load_settings
from app.lifespan import open_context
from app.local_cluster import LocalCluster
from app.main import DOMAINS, SERVICES, create_app, running_domains
from tests.conftest import (
    PROJECT_ROOT,
    data_keys,
    eventually,
    extra_cluster,
    make_settings,
    running_app,
    service_url,
)
from workers.pool import WorkerPool

# One route of each service, answered with anything but 404 when the service runs.
PROBES = {
    "profiles": "/profile/ana",
    "reporting": "/reporting/profileStats/3",
    "customers": "/customers",
    "users": "/user/read/0",
    "sessions": "/session/data",
    "messaging": "/queues/none",
    "videos": "/videos/none",
    "trips": "/trips/pending",
}


def test_the_services_are_the_domains_but_health_and_metrics() -> None:
    assert set(SERVICES) == set(PROBES)
    assert {domain.name for domain in DOMAINS if domain.always} == {"health", "observability"}


def test_every_service_is_chosen_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_SERVER__SERVICES", " profiles, reporting ")
    monkeypatch.setenv("APP_SERVICES__CUSTOMERS__REDIS_URL", "redis://c:1")
    settings = load_settings()
    assert settings.server.services == ("profiles", "reporting")
    assert settings.redis_url_for("customers") == "redis://c:1"
    names = [domain.name for domain in running_domains(settings)]
    assert names == ["profiles", "health", "reporting", "observability"]


@pytest.mark.parametrize(
    ("services", "where"),
    [
        ({"server": {"services": ["profiles", "billing"]}}, "server.services"),
        ({"services": {"bilings": {"redis_url": "redis://b:1"}}}, "services.bilings"),
    ],
)
def test_an_unknown_service_is_refused_naming_it(services: dict[str, object], where: str) -> None:
    settings = Settings(redis={"url": "redis://r:1"}, **services)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"^configuration error: {where}.*unknown service"):
        running_domains(settings)


@pytest.mark.parametrize(
    ("apart", "together"),
    [
        ({"reporting": "redis://other:7000"}, False),
        ({"profiles": "redis://other:7000"}, False),
        ({"videos": "redis://other:7000"}, False),
        ({"messaging": "redis://u:p@other:7000", "videos": "redis://v:q@other:7000"}, True),
        ({"reporting": "redis://reporting-svc:secret@shared:6379"}, True),
        # The default port is the same endpoint as 6379 written out.
        ({"reporting": "redis://reporting-svc:secret@shared"}, True),
    ],
)
@pytest.mark.parametrize("running", [(), ("customers",)])
def test_services_that_share_data_must_share_a_cluster(
    apart: dict[str, str], together: bool, running: tuple[str, ...]
) -> None:
    """Checked for every pair the configuration names, whichever services run here."""
    settings = Settings(
        redis={"url": "redis://shared:6379"},
        server={"services": running},
        services={name: {"redis_url": url} for name, url in apart.items()},
    )
    if together:
        running_domains(settings)
        return
    with pytest.raises(ConfigError, match="share data by design and must use the same cluster"):
        running_domains(settings)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APP_") and k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", ["app serve", "workers"])
def test_an_unknown_service_fails_the_start_with_one_line(module: str) -> None:
    done = run_cli(*module.split(), "--services", "profiles,biling", REDIS_URL="redis://x:1")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "unknown service 'biling'" in line
    assert "profiles, reporting, customers" in line


def test_workers_of_services_without_workers_end_at_once() -> None:
    done = run_cli("workers", "--services", "reporting,customers", REDIS_URL="redis://x:1")
    assert done.returncode == 0
    assert "the services chosen run no workers" in done.stderr


def test_a_split_of_profiles_from_reporting_fails_the_start() -> None:
    done = run_cli(
        "app",
        "serve",
        "--services",
        "profiles,reporting",
        REDIS_URL="redis://127.0.0.1:1",
        APP_SERVICES__REPORTING__REDIS_URL="redis://127.0.0.2:1",
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "'reporting' and 'profiles' share data by design" in line


@pytest.mark.parametrize("service", SERVICES)
def test_the_schema_lists_only_the_running_service(service: str) -> None:
    schema = create_app(make_settings("redis://127.0.0.1:1", services=[service])).openapi()
    tags = {tag for path in schema["paths"].values() for op in path.values() for tag in op["tags"]}
    domain = next(domain for domain in DOMAINS if domain.name == service)
    own = {str(tag) for router in domain.routers for tag in router.tags}
    assert tags == own | {"health"}
    assert {tag["name"] for tag in schema["tags"]} == own | {"health"}


async def test_routes_of_services_that_do_not_run_answer_404(settings: Settings) -> None:
    chosen = make_settings(settings.redis.url, services=["customers", "trips"])
    async with running_app(chosen) as (http, _state):
        for service, path in PROBES.items():
            answer = await http.get(path)
            # No route: the router's own 404; a running service answers (a 404 of its own names
            # what it did not find).
            unrouted = answer.status_code == 404 and answer.json() == {"message": "Not Found"}
            assert unrouted == (service not in {"customers", "trips"}), (service, answer.text)
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/docs")).status_code == 200


async def test_workers_run_only_for_the_chosen_services(settings: Settings) -> None:
    async def workers(*services: str) -> tuple[list[str], list[str]]:
        chosen = make_settings(settings.redis.url, services=services)
        domains = running_domains(chosen)
        async with open_context(chosen, domains) as context:
            pool = WorkerPool(context=context, domains=domains)
        return [c.spec.name for c in pool.consumers], [w.consumer for w in pool.queue_workers]

    assert await workers("customers", "trips") == ([], [])
    assert await workers("profiles") == (["aggregator"], [])
    consumers, queue_workers = await workers("videos", "messaging")
    assert consumers == []
    assert [name.split("-")[-2] for name in queue_workers] == ["chunker"]


@pytest.fixture
def second_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Another cluster (one shard, no replica) with the services' users."""
    with extra_cluster(tmp_path, shards=1, replicas_per_shard=0) as local:
        yield local


@pytest.mark.default_engine_only
@pytest.mark.slow
async def test_a_database_per_service_in_one_process(
    cluster: LocalCluster, second_cluster: LocalCluster, redis: RedisCluster
) -> None:
    """Customers on the session's cluster; profiles and reporting on another; one process,
    each service as its own user."""
    settings = make_settings(second_cluster.url, services=["profiles", "reporting", "customers"])
    own = ServiceSettings(redis_url=service_url(cluster.url, "customers"))
    settings = settings.model_copy(update={"services": {**settings.services, "customers": own}})
    names = [domain.name for domain in running_domains(settings)]
    assert names == ["profiles", "health", "reporting", "customers", "observability"]
    async with running_app(settings) as (http, state):
        assert len(state["stores"]) == 3, "one client per distinct URL: 3 users, 2 clusters"
        created = await http.post("/customers", json={"name": "Danilo"})
        assert created.status_code == 201, created.text
        assert (await http.post("/profile/ana", json={"a": "1"})).status_code == 201
        assert (await http.get("/profile/ana")).status_code == 200

        async def counted() -> bool:
            stats = (await http.get("/reporting/profileStats/1")).json()
            return bool(stats == {"results": [{"user": "ana", "score": 1}]})

        await eventually(counted, what="the read counted on the profiles' cluster")
        assert (await http.get("/readyz")).json() == {"message": "ready"}
        metrics = (await http.get("/metrics")).text
        for port in (cluster.ports[0], second_cluster.ports[0]):
            assert f'mdb_redis_node_up{{node="127.0.0.1:{port}"}} 1.0' in metrics
    customer_id = created.json()["id"]
    on_first = await data_keys(redis)
    assert any(customer_id in key for key in on_first)
    assert not any(key.startswith(("profile", "{profile")) for key in on_first)
    with Redis(host="127.0.0.1", port=second_cluster.ports[0], decode_responses=True) as node:
        on_second = set(node.scan_iter(count=1000))
    assert "profile:ana" in on_second
    assert "{profile:events}:read-counts" in on_second
    assert not any(customer_id in key for key in on_second)
