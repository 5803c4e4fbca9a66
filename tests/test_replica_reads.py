"""Reads from replicas (``redis.read_from_replicas``), on real clusters: the customer read routes
are answered by replicas, with the answers the primaries give; a customer read at once after its
creation is found; a replica that dies, hangs or answers MOVED leaves the read to its primary in
the same request; with the setting off nothing reaches a replica; the services' ACL users may
read from replicas.

Who answered is read from the nodes themselves: ``INFO commandstats`` (the calls of each command
on each node, reset before the reads) and ``CLIENT LIST`` (the app's connections, by ACL user).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.acl import user_name
from app.config import RedisSettings, Settings
from app.customers import keys as customer_keys
from app.customers.service import READ_CUSTOMERS
from app.local_cluster import LocalCluster
from app.redis import connect_client, open_store
from tests.conftest import (
    SERVICE_TESTS,
    all_events_applied,
    eventually,
    extra_cluster,
    make_settings,
    running_app,
)

HOST = "127.0.0.1"
CUSTOMERS_USER = user_name("customers")
# Enough customers that every shard holds some (ids are random UUIDs).
COUNT = 30
PAGE = 7


def replica_reads(settings: Settings, on: bool = True) -> Settings:
    """Return ``settings`` with redis.read_from_replicas set to ``on``."""
    return settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"read_from_replicas": on})}
    )


@asynccontextmanager
async def nodes(
    cluster: LocalCluster, ports: Sequence[int] | None = None
) -> AsyncIterator[dict[int, Redis]]:
    """Yield a client of each node of ``cluster`` (or of those at ``ports``) by port, as the
    default user."""
    clients = {
        port: Redis(host=HOST, port=port, decode_responses=True)
        for port in (cluster.ports if ports is None else ports)
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which nodes are primaries, and the primary's port of each replica."""

    primaries: list[int]
    primary_of: dict[int, int]

    @property
    def replicas(self) -> list[int]:
        return sorted(self.primary_of)

    def replicas_of(self, primary: int) -> list[int]:
        return sorted(port for port, owner in self.primary_of.items() if owner == primary)


async def layout(cluster: LocalCluster) -> Layout:
    async with nodes(cluster) as clients:
        primaries, primary_of = [], {}
        for port, client in clients.items():
            info = await client.info("replication")
            if info["role"] == "master":
                primaries.append(port)
            else:
                primary_of[port] = int(info["master_port"])
    return Layout(sorted(primaries), primary_of)


async def caught_up(cluster: LocalCluster) -> bool:
    """Return whether every replica has applied all that its primary has written."""
    async with nodes(cluster) as clients:
        info = {port: await client.info("replication") for port, client in clients.items()}
    return all(
        entry["master_link_status"] == "up"
        and entry["master_repl_offset"] == info[int(entry["master_port"])]["master_repl_offset"]
        for entry in info.values()
        if entry["role"] == "slave"
    )


async def reset_stats(cluster: LocalCluster) -> None:
    async with nodes(cluster) as clients:
        for client in clients.values():
            await client.config_resetstat()


async def calls(
    cluster: LocalCluster, command: str, ports: Sequence[int] | None = None
) -> dict[int, int]:
    """Return the calls of ``command`` (its INFO commandstats name, as ``evalsha_ro``) on each
    node (or on those at ``ports``)."""
    async with nodes(cluster, ports) as clients:
        found = {}
        for port, client in clients.items():
            stats = await client.info("commandstats")
            found[port] = int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return found


async def connections_of(cluster: LocalCluster, port: int, user: str) -> list[dict[str, Any]]:
    """Return the connections ``user`` has open to the node at ``port`` (CLIENT LIST), but the
    one that learned the topology (CLUSTER SLOTS: the client asks its start-up node, which an
    earlier failover may have made a replica)."""
    async with nodes(cluster) as clients:
        listed: list[dict[str, Any]] = await clients[port].client_list()
    return [
        entry
        for entry in listed
        if entry.get("user") == user and not entry.get("cmd", "").startswith("cluster|")
    ]


async def create(http: httpx.AsyncClient, n: int) -> tuple[str, dict[str, Any]]:
    body = {"name": f"customer {n}", "balance": n, "vip": n % 2 == 0}
    response = await http.post("/customers", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created["id"], created


async def read_everything(http: httpx.AsyncClient, ids: Sequence[str]) -> list[object]:
    """Read each customer, then every page of the listing: status, ETag and body of each."""
    answers: list[object] = []
    for customer_id in ids:
        response = await http.get(f"/customers/{customer_id}")
        answers.append((response.status_code, response.headers.get("etag"), response.json()))
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        response = await http.get("/customers", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        answers.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return answers


@pytest.mark.services("customers")
async def test_reads_are_answered_by_replicas_as_the_primaries_answer_them(
    cluster: LocalCluster, settings: Settings
) -> None:
    shape = await layout(cluster)
    async with running_app(replica_reads(settings, on=False)) as (http, _state):
        ids = [(await create(http, n))[0] for n in range(COUNT)]
        await eventually(lambda: caught_up(cluster), what="replicas in sync")
        await reset_stats(cluster)
        from_primaries = await read_everything(http, ids)
        off_connections = [await connections_of(cluster, p, CUSTOMERS_USER) for p in shape.replicas]
    off_calls = await calls(cluster, "evalsha_ro")
    # With the setting off, nothing reaches a replica: not a read, not even a connection.
    assert all(off_calls[port] > 0 for port in shape.primaries)
    assert [off_calls[port] for port in shape.replicas] == [0] * len(shape.replicas)
    assert off_connections == [[]] * len(shape.replicas)

    # Replicas lose their scripts (as after a restart; Redis 7 never copies SCRIPT LOAD to
    # them): the reads load them there again.
    async with nodes(cluster) as clients:
        for port in shape.replicas:
            await clients[port].script_flush()
    async with running_app(replica_reads(settings)) as (http, _state):
        await reset_stats(cluster)
        from_replicas = await read_everything(http, ids)
        on_connections = {
            port: await connections_of(cluster, port, CUSTOMERS_USER) for port in shape.replicas
        }
    on_calls = await calls(cluster, "evalsha_ro")
    loads = await calls(cluster, "script|load")

    assert from_replicas == from_primaries
    assert [on_calls[port] for port in shape.primaries] == [0] * len(shape.primaries)
    assert all(on_calls[port] > 0 for port in shape.replicas), on_calls
    assert all(loads[port] >= 1 for port in shape.replicas), loads
    # Every connection of the service to a replica said READONLY (CLIENT LIST flag r): the
    # automatic pipeline's connections, which carried these reads, included.
    for port, open_ in on_connections.items():
        assert open_, f"no connection of {CUSTOMERS_USER} to replica {port}"
        assert all("r" in entry["flags"] for entry in open_), open_


@pytest.mark.services("customers")
async def test_a_customer_is_found_at_once_after_its_creation(
    cluster: LocalCluster, settings: Settings
) -> None:
    """Replicas held behind (CLIENT PAUSE WRITE stops them applying their primary's stream):
    a new customer they lack is asked of the primary; an update, as documented, is not."""
    shape = await layout(cluster)
    async with running_app(replica_reads(settings)) as (http, _state):
        old_id, old = await create(http, 0)
        await eventually(lambda: caught_up(cluster), what="replicas in sync")
        async with nodes(cluster) as clients:
            for port in shape.replicas:
                # Loaded beforehand: SCRIPT LOAD would wait out the pause.
                await clients[port].script_load(READ_CUSTOMERS.source)
            for port in shape.replicas:
                await clients[port].client_pause(10_000, all=False)
            try:
                await reset_stats(cluster)
                for n in range(1, 6):
                    customer_id, created = await create(http, n)
                    response = await http.get(f"/customers/{customer_id}")
                    assert (response.status_code, response.json()) == (200, created)
                    assert response.headers["etag"] == '"1"'
                script_calls = await calls(cluster, "evalsha_ro")
                # Each read asked a replica, which missed, then the primary.
                assert sum(script_calls[port] for port in shape.replicas) == 5
                assert sum(script_calls[port] for port in shape.primaries) == 5

                updated = await http.put(f"/customers/{old_id}", json={"balance": 99})
                assert (updated.status_code, updated.headers["etag"]) == (204, '"2"')
                stale = await http.get(f"/customers/{old_id}")
                assert (stale.status_code, stale.headers["etag"], stale.json()) == (
                    200,
                    '"1"',
                    old,
                )
            finally:
                for port in shape.replicas:
                    await clients[port].client_unpause()

        async def updated_everywhere() -> bool:
            response = await http.get(f"/customers/{old_id}")
            return bool(response.json()["balance"] == 99)

        await eventually(updated_everywhere, what="the update read from the replica")


async def test_a_replica_that_answers_moved_leaves_the_read_to_the_primary(
    cluster: LocalCluster,
) -> None:
    """A store told to read from replicas over connections that never said READONLY: every
    replica answers MOVED, and every read still gets its answer, from the primary."""
    shape = await layout(cluster)
    async with open_store(RedisSettings(), cluster.url) as plain:
        store = dataclasses.replace(plain, read_from_replicas=True)
        ids = [f"moved-{n}" for n in range(20)]
        for customer_id in ids:
            key = customer_keys.customer_key(customer_id)
            await store.call(key, "HSET", key, "name", customer_id, what="test")
        await eventually(lambda: caught_up(cluster), what="replicas in sync")
        async with nodes(cluster) as clients:
            for port in cluster.ports:
                await clients[port].script_load(READ_CUSTOMERS.source)
        await reset_stats(cluster)
        for customer_id in ids:
            key = customer_keys.customer_key(customer_id)
            reply = await READ_CUSTOMERS(
                store,
                keys=[key, customer_keys.meta_key(customer_id)],
                args=[],
                what="test",
                replica=True,
            )
            assert reply == [[["name", customer_id], []]]
    async with nodes(cluster) as clients:
        stats = {port: await clients[port].info("commandstats") for port in cluster.ports}
    script = {port: stats[port].get("cmdstat_evalsha_ro", {}) for port in cluster.ports}
    # A replica is tried again only after a pause: each one refused one read at most.
    refused = sum(int(script[port].get("rejected_calls", 0)) for port in shape.replicas)
    assert 1 <= refused <= len(shape.replicas)
    assert sum(int(script[port].get("calls", 0)) for port in shape.replicas) == 0
    assert sum(int(script[port].get("calls", 0)) for port in shape.primaries) == len(ids)


async def test_the_general_path_reads_primaries_with_replica_reads_on(
    cluster: LocalCluster,
) -> None:
    """The client's own routing stays on primaries (workers, gauges, idempotency checks read
    there) though its connections say READONLY."""
    shape = await layout(cluster)
    client = await connect_client(RedisSettings(read_from_replicas=True), cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        keys = [f"general-{n}" for n in range(30)]
        for key in keys:
            await client.set(key, key)
        await eventually(lambda: caught_up(cluster), what="replicas in sync")
        await reset_stats(cluster)
        assert [await client.get(key) for key in keys] == keys
    finally:
        await client.aclose()
    gets = await calls(cluster, "get")
    assert [gets[port] for port in shape.replicas] == [0] * len(shape.replicas)
    assert sum(gets[port] for port in shape.primaries) == len(keys)


async def test_the_services_users_may_read_from_replicas(cluster: LocalCluster) -> None:
    """Every service's user may say READONLY on a replica; the customers' user may run its
    read script there with EVALSHA_RO."""
    shape = await layout(cluster)
    key = customer_keys.customer_key("acl-probe")
    async with nodes(cluster) as clients:
        replica = clients[shape.replicas[0]]
        for service in SERVICE_TESTS:
            dry_run = await replica.acl_dryrun(user_name(service), "READONLY")
            assert dry_run == "OK", (service, dry_run)
        allowed = await replica.acl_dryrun(
            CUSTOMERS_USER, "EVALSHA_RO", READ_CUSTOMERS.sha, 2, key,
            customer_keys.meta_key("acl-probe"),
        )  # fmt: skip
    assert allowed == "OK"


@dataclasses.dataclass
class Readers:
    """Clients reading random customers until told to stop, keeping every answer."""

    http: httpx.AsyncClient
    expected: dict[str, dict[str, Any]]
    # (seconds it took, status or exception name, whether the body was the expected one)
    answers: list[tuple[float, int | str, bool]] = dataclasses.field(default_factory=list)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def read(self) -> None:
        ids = list(self.expected)
        while not self.stop.is_set():
            customer_id = random.choice(ids)
            started = time.monotonic()
            try:
                response = await self.http.get(f"/customers/{customer_id}")
                status: int | str = response.status_code
                right = status == 200 and response.json() == self.expected[customer_id]
            except httpx.HTTPError as exc:
                status, right = type(exc).__name__, False
            self.answers.append((time.monotonic() - started, status, right))


@pytest.mark.slow
@pytest.mark.chaos
async def test_reads_go_on_while_replicas_die_or_hang(tmp_path: Path) -> None:
    """Two replicas a shard, spread over; then one shard loses both (kill -9) and another's
    replica hangs (DEBUG SLEEP): no read fails, none waits past the retry deadline."""
    with extra_cluster(tmp_path, replicas_per_shard=2) as own:
        shape = await layout(own)
        settings = replica_reads(make_settings(own.url, services=("customers",)))
        async with running_app(settings) as (http, _state):
            expected = dict([await create(http, n) for n in range(COUNT)])
            await eventually(lambda: caught_up(own), what="replicas in sync")
            await reset_stats(own)
            for customer_id in expected:
                assert (await http.get(f"/customers/{customer_id}")).status_code == 200
            spread = await calls(own, "evalsha_ro")
            assert [spread[port] for port in shape.primaries] == [0] * len(shape.primaries)
            assert all(spread[port] > 0 for port in shape.replicas), spread

            dying_shard, hanging_shard, calm_shard = shape.primaries
            dying = shape.replicas_of(dying_shard)
            hanging, standing_in = shape.replicas_of(hanging_shard)
            readers = Readers(http, expected)
            tasks = [asyncio.create_task(readers.read()) for _ in range(16)]
            await asyncio.sleep(0.5)
            await reset_stats(own)
            for victim in dying:
                await asyncio.to_thread(own.kill_node, own.ports.index(victim))
                await asyncio.sleep(1.0)
            async with nodes(own, [hanging]) as clients:
                # Blocks the node, and this client until it wakes.
                await clients[hanging].execute_command("DEBUG", "SLEEP", 2.5)  # type: ignore[no-untyped-call]
            await asyncio.sleep(1.0)
            readers.stop.set()
            await asyncio.gather(*tasks)
            alive = [port for port in own.ports if port not in dying]
            after = await calls(own, "evalsha_ro", alive)

    failed = [(round(s, 2), status) for s, status, right in readers.answers if not right]
    slowest = max(seconds for seconds, _status, _right in readers.answers)
    assert len(readers.answers) > 100
    assert failed == [], "every read answered 200 with the customer"
    assert slowest < settings.redis.retry_deadline_s, "no read waited out the retry deadline"
    # The shard without replicas was read from its primary; the one whose replica hung from
    # its other replica, and from its primary for the reads that waited for the sleeper in
    # vain; the third from its replicas only.
    assert after[dying_shard] > 0
    assert after[standing_in] > 0
    assert after[hanging_shard] > 0
    assert after[calm_shard] == 0
    assert all(after[port] > 0 for port in shape.replicas_of(calm_shard))


@pytest.mark.services("profiles", "reporting")
async def test_profile_reads_and_the_report_are_answered_by_replicas(
    cluster: LocalCluster, settings: Settings, redis: RedisCluster
) -> None:
    shape = await layout(cluster)
    users = [f"user-{n}" for n in range(20)]
    async with running_app(replica_reads(settings, on=False)) as (http, _state):
        for n, user in enumerate(users):
            assert (await http.post(f"/profile/{user}", json={"n": str(n)})).status_code == 201
            for _ in range(n % 4):
                await http.get(f"/profile/{user}")
        await eventually(lambda: all_events_applied(redis), what="events applied")
        report_off = (await http.get("/reporting/profileStats/20")).json()
    await eventually(lambda: caught_up(cluster), what="replicas in sync")
    async with running_app(replica_reads(settings)) as (http, _state):
        await reset_stats(cluster)
        report_on = (await http.get("/reporting/profileStats/20")).json()
        profiles = [(await http.get(f"/profile/{user}")).json() for user in users]
        # Held behind, replicas lack a profile created now: the primary answers the read.
        async with nodes(cluster) as clients:
            for port in shape.replicas:
                await clients[port].client_pause(5_000, all=False)
            try:
                assert (await http.post("/profile/new", json={"a": "1"})).status_code == 201
                assert (await http.get("/profile/new")).json() == {"a": "1"}
            finally:
                for port in shape.replicas:
                    await clients[port].client_unpause()
    assert report_on == report_off
    assert len(report_on["results"]) == 15  # the users read at least once
    assert profiles == [{"n": str(n)} for n in range(len(users))]
    # (EXISTS also runs on primaries: the metrics' stream gauges ask whether a stream exists.)
    for command in ("evalsha_ro", "zrevrange", "exists"):
        found = await calls(cluster, command)
        assert sum(found[port] for port in shape.replicas) > 0, (command, found)
    counts = await calls(cluster, "zrevrange")
    assert [counts[port] for port in shape.primaries] == [0] * len(shape.primaries)
    # On primaries, only the read of the profile the paused replicas lacked.
    script_calls = await calls(cluster, "evalsha_ro")
    assert sum(script_calls[port] for port in shape.primaries) == 1
