"""Each service's generated ACL user (``app.acl``) on a real cluster: the profile, reporting and
video chunker code runs under nothing more. (That every node accepts the users, and what they
are refused: tests/test_acl.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from app.acl import service_rules
from app.config import MessagingSettings, RedisSettings
from app.domain import Context
from app.local_cluster import LocalCluster
from app.main import SERVICES
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
    """One user per service, with its generated rules: service name -> connection URL."""
    urls = {}
    for service in SERVICES:
        name = f"svc-{service}"
        set_user(cluster, name, service_rules(service))
        urls[service] = f"redis://{name}:{PASSWORD}@127.0.0.1:{cluster.ports[0]}"
    yield urls
    for service in SERVICES:
        delete_user(cluster, f"svc-{service}")


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
        assert await apply_events(store, profile_keys.EVENTS_STREAM, entries) == len(entries) == 4
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
