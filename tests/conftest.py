"""Fixtures: a real Redis Cluster for the whole session, and the app running against it.

The cluster is 3 primaries with 1 replica each, started from local ``redis-server`` processes on
free loopback ports by the same launcher the embedded default uses. It starts with the first
test that asks for it (directly or through ``settings``, ``client``, ``redis``...), so the tests
that need none (``tests/unit``) run where there is no ``redis-server``. With
``TEST_REDIS_BACKEND=testcontainers`` (and a reachable Docker engine) the same nodes run as
containers instead (image: ``TEST_REDIS_IMAGE``, default ``redis:7.2``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from redis.asyncio.cluster import RedisCluster

from app.config import Settings
from app.local_cluster import ClusterSpec, LocalCluster
from app.profiles import keys as profile_keys
from tests.engines import DEFAULT_ENGINE, ENGINE_ENV, chosen_engine

if TYPE_CHECKING:
    from app.lifespan import AppState

BACKEND_ENV = "TEST_REDIS_BACKEND"
IMAGE_ENV = "TEST_REDIS_IMAGE"


# The tests of a service live in tests/<service>/: its app runs that service alone, connected
# as the service's own generated ACL user (every node of the test cluster has them), so a key or
# command its declaration lacks fails its tests with NOPERM.
SERVICE_TESTS = (
    "profiles",
    "reporting",
    "customers",
    "users",
    "sessions",
    "messaging",
    "videos",
    "trips",
)
TESTS = Path(__file__).resolve().parent


def service_password(service: str) -> str:
    """Return the test cluster's password of ``service``'s ACL user."""
    return f"test-{service}-password"


def service_url(url: str, service: str) -> str:
    """Return ``url`` (the cluster's, as the default user) as ``service``'s own user."""
    from app.acl import user_name

    parts = urlsplit(url)
    netloc = f"{user_name(service)}:{service_password(service)}@{parts.netloc.rsplit('@')[-1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def service_acl_file(directory: Path, *, module_commands: bool = False) -> Path:
    """Write an ACL file with every service's generated user (test passwords); return it.

    Every node loads it at start (``ClusterSpec.acl_file``), and again when a test restarts it.
    ``module_commands``: for nodes with the JSON module, whose commands the trips' user needs
    there (a node without the module refuses a file that names them).
    """
    from app.acl import aclfile_lines

    passwords = {service: service_password(service) for service in SERVICE_TESTS}
    path = directory / "users.acl"
    lines = aclfile_lines(passwords, module_commands=module_commands)
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def extra_cluster(directory: Path, **spec: Any) -> Iterator[LocalCluster]:
    """Start another cluster (``ClusterSpec`` fields in ``spec``) in ``directory``, with the
    services' users; stop it on exit."""
    from tests.service import free_base_port  # (tests.service imports this module)

    shape = ClusterSpec(
        data_dir=directory / "nodes",
        die_with_parent=True,
        acl_file=service_acl_file(directory),
        **spec,
    )
    if shape.base_port is None:  # in this session's port region (tests/service.py)
        shape = dataclasses.replace(shape, base_port=free_base_port(shape.size))
    local = LocalCluster(shape)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def make_settings(url: str, *, services: Sequence[str] = (), **workers: Any) -> Settings:
    """Return settings for an app under test: fast claims and backoff so tests run quickly.

    With ``services``, the app runs those alone, each connected as its own ACL user of the
    cluster at ``url``.
    """
    worker_settings = {
        "block_ms": 200,
        "claim_min_idle_ms": 1000,
        "claim_interval_s": 0.2,
        "error_backoff_s": 0.05,
        "drain_timeout_s": 5.0,
        **workers,
    }
    own = {name: {"redis_url": service_url(url, name)} for name in services}
    return Settings(
        redis={
            # The first service's user: no part of the app falls back to the default user.
            "url": service_url(url, services[0]) if services else url,
            "retry_backoff_base_s": 0.02,
            "retry_backoff_cap_s": 0.25,
        },
        workers=worker_settings,
        server={"services": tuple(services)},
        services=own,
    )


def with_workers(settings: Settings, **workers: Any) -> Settings:
    """Return ``settings`` with these ``[workers]`` settings changed."""
    return settings.model_copy(update={"workers": settings.workers.model_copy(update=workers)})


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Start a 3-shard, 1-replica Redis Cluster for the session, on the engine that
    ``TEST_REDIS_ENGINE`` names (tests/engines)."""
    engine = chosen_engine()
    image = None
    if os.environ.get(BACKEND_ENV) == "testcontainers":
        if engine.name != DEFAULT_ENGINE:
            pytest.fail(f"{ENGINE_ENV}={engine.name} runs local processes only", pytrace=False)
        image = os.environ.get(IMAGE_ENV, "redis:7.2")
    from tests.service import free_base_port  # (tests.service imports this module)

    data_dir = tmp_path_factory.mktemp("cluster")
    spec = ClusterSpec(
        data_dir=data_dir,
        base_port=free_base_port(),
        die_with_parent=True,
        acl_file=service_acl_file(data_dir, module_commands=engine.has_json),
        redis_server=engine.redis_server,
        modules=engine.modules,
    )
    local = LocalCluster(spec, container_image=image)
    local.start()
    yield local
    local.stop()


@pytest.fixture(autouse=True)
def _empty_cluster(request: pytest.FixtureRequest) -> None:
    """Give every test that uses the cluster an empty one, so tests run in any order."""
    # Asking for ``cluster`` here only when the test does keeps the other tests cluster-free.
    if "cluster" in request.fixturenames:
        cluster: LocalCluster = request.getfixturevalue("cluster")
        cluster.flushall()


@pytest.fixture
def services(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The services the test's app runs, each as its own ACL user: those of the test's
    ``services`` marker, else its folder's service (tests/<service>/); none elsewhere (every
    service, as the cluster's default user)."""
    marker = request.node.get_closest_marker("services")
    if marker is not None:
        return tuple(marker.args)
    parts = request.path.resolve().relative_to(TESTS).parts
    return (parts[0],) if len(parts) > 1 and parts[0] in SERVICE_TESTS else ()


@pytest.fixture
def settings(cluster: LocalCluster, services: tuple[str, ...]) -> Settings:
    return make_settings(cluster.url, services=services)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """Start the app's lifespan (client, workers) and yield an HTTP client and the app state."""
    # Imported here, not at the top, so that a test that starts no app does not import every
    # domain with this file.
    from app.main import create_app

    app = create_app(settings)
    async with LifespanManager(app) as manager:

        async def per_request_state(scope: Any, receive: Any, send: Any) -> None:
            # A copy of the lifespan's state per request, as uvicorn gives it (asgi-lifespan
            # hands every request the one dict, so one request's state would show in the next).
            scope["state"] = dict(manager._state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=per_request_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, cast("AppState", manager._state)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app, with its lifespan (client, workers) running."""
    async with running_app(settings) as (http, _state):
        yield http


@pytest.fixture
async def redis(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A separate client for looking at what the service stored."""
    direct = RedisCluster.from_url(cluster.url, decode_responses=True)
    await direct.initialize()
    yield direct
    await direct.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_s: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` is true (for effects of background workers)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")


PROJECT_ROOT = TESTS.parent


async def data_keys(redis: RedisCluster) -> set[str]:
    """Return every key in the cluster except an empty event stream (the workers create it) and
    the layout marks of the messaging data and of the profile event streams."""
    found = {key async for key in redis.scan_iter(count=1000)}
    if "profile:events" in found and await redis.xlen("profile:events") == 0:
        found.discard("profile:events")
    # Written at start-up by the messaging and video services (app.messaging.migrate).
    found.discard("messaging:layout")
    # Written at start-up by the profiles service (app.profiles.layout).
    found.discard("{profile:events}:streams")
    return found


async def expected_read_counts(redis: RedisCluster, streams: int = 1) -> dict[str, int]:
    """Derive the read counts from the whole of every event stream (``streams`` of them)."""
    counts: dict[str, int] = {}
    for stream in profile_keys.event_streams(streams):
        counts |= ReadTally().add_all([fields async for fields in _all_events(redis, stream)])
    return counts


class ReadTally:
    """The read counts the events of one stream make, applied in stream order.

    A user's count is the number of reads of the newest generation of their profile, unless that
    generation was deleted; events without a generation (the seeds' format) belong to the
    current generation and count in stream order.
    """

    def __init__(self) -> None:
        self.register: dict[str, tuple[int, bool]] = {}
        self.counts: dict[str, int] = {}

    def add_all(self, events: list[dict[str, str]]) -> dict[str, int]:
        for fields in events:
            self.add(fields)
        return self.counts

    def add(self, fields: dict[str, str]) -> None:
        register, counts = self.register, self.counts
        user, kind = fields.get("user"), fields.get("type")
        if user is None:
            return
        current, alive = register.get(user, (-1, True))
        given = fields.get("generation")
        valid = given is not None and given.isascii() and given.isdigit() and len(given) <= 15
        generation = int(given) if valid and given else max(current, 0)
        given = given if valid else None
        if kind == "read":
            if generation > current:
                register[user], counts[user] = (generation, True), 1
            elif generation == current and alive:
                counts[user] = counts.get(user, 0) + 1
        elif kind == "create":
            if generation > current or (generation == current and not alive and given is None):
                register[user] = (generation, True)
                counts.pop(user, None)
        elif kind == "delete" and generation >= current:
            register[user] = (generation, False)
            counts.pop(user, None)


async def _all_events(redis: RedisCluster, stream: str) -> AsyncIterator[dict[str, str]]:
    start = "-"
    while True:
        page: Any = await redis.xrange(stream, min=start, count=5000)
        for _id, fields in page:
            yield fields
        if len(page) < 5000:
            return
        last = page[-1][0]
        millis, seq = last.split("-")
        start = f"{millis}-{int(seq) + 1}"


async def stored_read_counts(redis: RedisCluster, streams: int = 1) -> dict[str, int]:
    """Return the aggregator's sorted sets (one per stream) as one dict."""
    counts: dict[str, int] = {}
    for stream in profile_keys.event_streams(streams):
        pairs: Any = await redis.zrange(profile_keys.read_counts(stream), 0, -1, withscores=True)
        counts |= {user: int(score) for user, score in pairs}
    return counts


async def all_events_applied(redis: RedisCluster, streams: int = 1) -> bool:
    """Return whether the aggregator group of every stream has read and acknowledged (so
    applied) everything."""
    for stream in profile_keys.event_streams(streams):
        if not await redis.exists(stream):
            return False
        groups = await redis.xinfo_groups(stream)
        ours = [g for g in groups if g["name"] == profile_keys.AGGREGATOR_GROUP]
        if not ours or ours[0]["lag"] != 0 or ours[0]["pending"] != 0:
            return False
    return True


def shard_of(redis: RedisCluster, key: str) -> str:
    """Return the name of the primary that serves ``key``."""
    node = redis.get_node_from_key(key)
    assert node is not None
    return str(node.name)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[str]:
    """Serve the app over real HTTP on a free loopback port; yield its base URL (for a browser)."""
    from app.main import create_app

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


@pytest.fixture(scope="session")
def openapi() -> dict[str, Any]:
    """The service's OpenAPI schema, as /openapi.json serves it."""
    from app.main import create_app

    schema: dict[str, Any] = create_app().openapi()
    return schema
