"""``python -m app serve`` with ``embedded.acl``: the embedded cluster holds a user per service,
with passwords generated once and kept beside its data, and each service connects as its own."""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, NoPermissionError

from app.acl import user_name, write_aclfile
from app.local_cluster import ClusterSpec, LocalCluster, command, port_free, single_node
from app.main import SERVICES
from app.serve import ACL_FILE, ACL_PASSWORDS_FILE
from tests.service import HOST, NODES, Service, clean_up, free_base_port


@pytest.fixture
def acl_service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "redis", APP_EMBEDDED__ACL="true")
    yield running
    clean_up(running)


def node_users(service: Service) -> list[set[str]]:
    """Return the users of each node, as the admin (default) user sees them."""
    found = []
    for index in range(NODES):
        with single_node(HOST, service.base_port + index) as node:
            found.append(set(command(node, "ACL", "USERS")))
    return found


def default_user_clients(service: Service) -> list[str]:
    """Return the connections to any node made as the default user, besides the replication
    links and the one asking."""
    found = []
    for index in range(NODES):
        with single_node(HOST, service.base_port + index) as node:
            me = node.client_id()
            for client in node.client_list():
                replication = set(client["flags"]) & {"S", "M"}
                if client["user"] == "default" and int(client["id"]) != me and not replication:
                    found.append(f"{service.base_port + index}: {client}")
    return found


@pytest.mark.slow
async def test_each_service_runs_as_its_own_user_with_kept_passwords(
    acl_service: Service,
) -> None:
    log = acl_service.data_dir.parent / "serve.log"
    acl_service.start(output=log)
    async with httpx.AsyncClient(base_url=acl_service.url) as http:
        assert (await http.post("/profile/ana", json={"email": "ana@example.com"})).status_code
        assert (await http.get("/profile/ana")).json() == {"email": "ana@example.com"}
        created = await http.post("/customers", json={"name": "Ana"})
        assert created.status_code == 201
        customer = created.json()["id"]
        assert (await http.get(f"/customers/{customer}")).json()["name"] == "Ana"

    expected = {"default", *(user_name(service) for service in SERVICES)}
    assert node_users(acl_service) == [expected] * NODES
    # No process of the service holds a connection as the admin user.
    assert default_user_clients(acl_service) == []

    passwords_file = acl_service.data_dir / ACL_PASSWORDS_FILE
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    passwords = json.loads(passwords_file.read_text())
    assert set(passwords) == set(SERVICES)
    # The nodes' file holds hashes only.
    users_file = (acl_service.data_dir / ACL_FILE).read_text()
    assert not any(password in users_file for password in passwords.values())

    # A user from the file is refused another service's key, asked of the node that owns it.
    customers = RedisCluster(
        host=HOST,
        port=acl_service.base_port,
        username=user_name("customers"),
        password=passwords["customers"],
        decode_responses=True,
    )
    try:
        with pytest.raises(NoPermissionError):
            await customers.hgetall("profile:ana")
        with pytest.raises(NoPermissionError):
            await customers.hset("profile:ana", "email", "eve@example.com")
    finally:
        await customers.aclose()

    # One process: it ends as the signal asked (143), having stopped the nodes.
    acl_service.signal(signal.SIGTERM)
    assert all(port_free(HOST, acl_service.base_port + i) for i in range(NODES))
    acl_service.start(output=log)
    # The same passwords after a restart: the users and the services' URLs still match.
    assert json.loads(passwords_file.read_text()) == passwords
    assert node_users(acl_service) == [expected] * NODES
    async with httpx.AsyncClient(base_url=acl_service.url) as http:
        assert (await http.get("/profile/ana")).json() == {"email": "ana@example.com"}
        assert (await http.get(f"/customers/{customer}")).status_code == 200
    acl_service.signal(signal.SIGTERM)


def authenticates(port: int, user: str, password: str) -> bool:
    with single_node(HOST, port) as node:
        try:
            return bool(command(node, "AUTH", user, password))
        except AuthenticationError:
            return False


@pytest.mark.slow
def test_adopted_nodes_get_the_users_of_the_file_as_it_is_now(tmp_path: Path) -> None:
    """A node left running by an earlier start (a service killed with -9) is adopted as it is:
    started without the file, or with an older one, it is given the file's users."""
    acl_file = tmp_path / ACL_FILE
    spec = ClusterSpec(data_dir=tmp_path, base_port=free_base_port(), replicas_per_shard=0)
    with_users = replace(spec, acl_file=acl_file)
    launched: list[LocalCluster] = []

    def start(chosen: ClusterSpec) -> LocalCluster:
        cluster = LocalCluster(chosen)
        launched.append(cluster)
        cluster.start()
        return cluster

    try:
        first = start(spec)
        port = first.ports[0]
        write_aclfile(acl_file, {"profiles": "first-password"})
        # Adopted, started without an ACL file: the users are set one by one.
        start(with_users)
        assert all(authenticates(p, "profiles-svc", "first-password") for p in first.ports)
        # Started with the file, which then changes under the running nodes: ACL LOAD.
        first.stop()
        start(with_users)
        write_aclfile(acl_file, {"profiles": "second-password"})
        start(with_users)
        assert authenticates(port, "profiles-svc", "second-password")
        assert not authenticates(port, "profiles-svc", "first-password")
    finally:
        for cluster in reversed(launched):
            cluster.stop()
