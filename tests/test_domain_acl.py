"""Each domain's declared keys and commands, as an ACL user on a real cluster: the server accepts
them, and the profile and reporting code runs under nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from app.config import RedisSettings
from app.domain import CLIENT_COMMANDS, Domain
from app.local_cluster import LocalCluster
from app.main import DOMAINS
from app.profiles import keys as profile_keys
from app.profiles import service as profiles
from app.profiles.aggregator import apply_events
from app.redis import open_store
from app.reporting import service as reporting
from app.slots import same_slot_key
from app.streams import APPEND_MANY, StreamWriter
from workers.consumer import delivered_entries

PASSWORD = "domain-pass"


def rules(domain: Domain) -> list[str]:
    """Return the ACL rules a service user of ``domain`` gets (no module commands)."""
    return [
        *(pattern.acl for pattern in domain.keys),
        *CLIENT_COMMANDS,
        *domain.commands,
    ]


def set_user(cluster: LocalCluster, name: str, user_rules: list[str]) -> None:
    """Create the user on every node: ACL users are per node, as on MemoryDB."""
    for port in cluster.ports:
        with Redis(host="127.0.0.1", port=port) as node:
            node.execute_command("ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}", *user_rules)


def delete_user(cluster: LocalCluster, name: str) -> None:
    for port in cluster.ports:
        with Redis(host="127.0.0.1", port=port) as node:
            node.acl_deluser(name)


@pytest.fixture
def domain_users(cluster: LocalCluster) -> Iterator[dict[str, str]]:
    """One user per domain, made from its declaration: domain name -> connection URL."""
    urls = {}
    for domain in DOMAINS:
        name = f"svc-{domain.name}"
        set_user(cluster, name, rules(domain))
        urls[domain.name] = f"redis://{name}:{PASSWORD}@127.0.0.1:{cluster.ports[0]}"
    yield urls
    for domain in DOMAINS:
        delete_user(cluster, f"svc-{domain.name}")


def test_every_declared_command_and_pattern_is_accepted(
    domain_users: dict[str, str], cluster: LocalCluster
) -> None:
    with Redis(host="127.0.0.1", port=cluster.ports[0], decode_responses=True) as node:
        for domain in DOMAINS:
            described = node.execute_command("ACL", "GETUSER", f"svc-{domain.name}")
            assert described is not None, domain.name


async def test_profiles_and_reporting_run_under_their_declared_users(
    domain_users: dict[str, str], redis: RedisCluster
) -> None:
    settings = RedisSettings()
    async with open_store(settings, domain_users["profiles"]) as store:
        streams = StreamWriter(store)
        await profiles.create_profile(
            store=store, streams=streams, user="acl-ana", fields={"a": "1"}
        )
        assert await profiles.read_profile(store=store, streams=streams, user="acl-ana") == {
            "a": "1"
        }
        # A profile the seeds' code wrote: its first read starts its count (ZADD).
        await redis.hset("profile:acl-bo", mapping={"b": "2"})
        await profiles.read_profile(store=store, streams=streams, user="acl-bo")
        await streams.aclose()
        # A batch of appends sent again after a lost reply is answered from the stream (XRANGE).
        marker = same_slot_key(profile_keys.EVENTS_STREAM, ":append-batch:acl")
        batch = ["60", "1", "user", "acl-ana"]
        script_keys = [profile_keys.EVENTS_STREAM, marker]
        first = await APPEND_MANY(store, keys=script_keys, args=batch, what="test")
        assert await APPEND_MANY(store, keys=script_keys, args=batch, what="test") == first
        client = store.client
        await client.xgroup_create(
            profile_keys.EVENTS_STREAM, profile_keys.AGGREGATOR_GROUP, id="0", mkstream=True
        )
        entries = delivered_entries(
            await client.xreadgroup(
                profile_keys.AGGREGATOR_GROUP, "acl-test", {profile_keys.EVENTS_STREAM: ">"}
            )
        )
        assert await apply_events(store, entries) == len(entries) == 4
    async with open_store(settings, domain_users["reporting"]) as store:
        top = await reporting.top_profiles(store=store, n=5)
        assert {(stat.user, stat.score) for stat in top} == {("acl-ana", 1), ("acl-bo", 1)}
    async with open_store(settings, domain_users["reporting"]) as store:
        with pytest.raises(NoPermissionError):
            await store.call("profile:acl-ana", "HGETALL", "profile:acl-ana", what="test")
    assert await redis.hgetall("profile:acl-ana") == {"a": "1"}
