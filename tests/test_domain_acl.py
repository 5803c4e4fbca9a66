"""Each domain's declared keys and commands, as an ACL user on a real cluster: the server accepts
them, and the profile and reporting code runs under nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from app.config import MessagingSettings, RedisSettings
from app.domain import CLIENT_COMMANDS, Context, Domain
from app.local_cluster import LocalCluster
from app.main import DOMAINS
from app.messaging import Broker
from app.profiles import keys as profile_keys
from app.profiles import service as profiles
from app.profiles.aggregator import apply_events
from app.redis import open_store
from app.reporting import service as reporting
from app.slots import same_slot_key
from app.streams import APPEND_MANY, StreamWriter
from app.videos import service as videos
from app.videos.chunker import CHUNKER
from app.videos.schemas import VideoCreate
from tests.conftest import make_settings
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


def test_every_declared_command_and_pattern_is_accepted(cluster: LocalCluster) -> None:
    with Redis(host="127.0.0.1", port=cluster.ports[0], decode_responses=True) as node:
        # Module commands only where the server has the module, as a deployment grants them.
        has_json = "json.get" in node.command_list()
        for domain in DOMAINS:
            optional = list(domain.optional_commands) if has_json else []
            # ACL SETUSER refuses an unknown command or a malformed selector.
            answer = node.execute_command(
                "ACL", "SETUSER", "svc-check", "reset", *rules(domain), *optional
            )
            assert answer == "OK", domain.name
            assert node.execute_command("ACL", "DRYRUN", "svc-check", "PING") == "OK"
        node.acl_deluser("svc-check")


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


async def test_the_video_chunker_runs_under_its_declared_user(
    domain_users: dict[str, str], cluster: LocalCluster, redis: RedisCluster
) -> None:
    async with open_store(RedisSettings(), domain_users["videos"]) as store:
        broker = Broker(store=store, settings=MessagingSettings())
        video = await videos.create_video(
            broker=broker, video=VideoCreate(title="acl", duration_s=25)
        )
        context = Context(
            settings=make_settings(cluster.url),
            store=store,
            streams=StreamWriter(store),
            services={Broker: broker},
        )
        job = CHUNKER.job(context)
        (delivery,) = await job.queue.receive(consumer="acl-chunker", limit=1, wait_s=0)
        assert await job.handle(delivery) == 3
        await job.queue.ack(delivery.id, delivery.receipt)
        assert (await videos.read_video(store=store, video_id=video.id)).status == "chunked"
        assert (await broker.trace(delivery.id)).events[-1].event == "acked"
    assert await redis.hget(f"video:{video.id}", "status") == "chunked"
