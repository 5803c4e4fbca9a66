"""Online resharding: a shard joins and leaves under mixed traffic, and the embedded cluster's
``python -m app cluster add-shard`` / ``remove-shard`` on a running service."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from app.local_cluster import (
    TOTAL_SLOTS,
    AddedShard,
    ClusterSpec,
    LocalCluster,
    Resized,
    ShardState,
    command,
    even_moves,
    parse_cluster_nodes,
    port_free,
    read_added_shards,
    single_node,
    write_added_shards,
)
from app.metrics import PREFIX
from app.redis import open_store
from app.scripting import LuaScript
from tests.conftest import (
    SERVICE_TESTS,
    all_events_applied,
    eventually,
    expected_read_counts,
    extra_cluster,
    make_settings,
    running_app,
    stored_read_counts,
)
from tests.engines import chosen_engine
from tests.service import HOST, NODES, Service, free_base_port, service
from tests.test_serve import run_cli

__all__ = ["service"]

VISIBILITY_S = 5
QUEUE = "reshard"
TOPIC = "reshard"
GROUP = "billing"
READ_USERS = [f"reader-{n}" for n in range(40)]
# The clusters here run on the engine TEST_REDIS_ENGINE names (tests/engines).
ENGINE = {"redis_server": chosen_engine().redis_server, "modules": chosen_engine().modules}


def test_an_added_shard_gets_an_even_share_from_the_lowest_slots() -> None:
    owned = {"a": range(0, 5461), "b": range(5461, 10922), "c": range(10922, 16384), "d": ()}
    moves = even_moves(owned, ["a", "b", "c", "d"])
    assert len(moves) == 4096
    assert {move.target for move in moves} == {"d"}
    taken = Counter(move.source for move in moves)
    assert taken == {"a": 1365, "b": 1365, "c": 1366}
    assert [m.slot for m in moves if m.source == "a"] == list(range(1365))


def test_a_leaving_shard_gives_every_slot_away_evenly() -> None:
    owned = {
        "a": range(1365, 5461),
        "b": range(6826, 10922),
        "c": range(12288, 16384),
        "d": [*range(1365), *range(5461, 6826), *range(10922, 12288)],
    }
    moves = even_moves(owned, ["a", "b", "c"])
    assert {move.source for move in moves} == {"d"}
    assert len(moves) == 4096
    after = Counter({node: len(slots) for node, slots in owned.items()})
    for move in moves:
        after[move.source] -= 1
        after[move.target] += 1
    assert sorted(after.values()) == [0, 5461, 5461, 5462]
    assert sum(after.values()) == TOTAL_SLOTS


@pytest.mark.slow
async def test_commands_ride_out_a_slot_moving_to_a_primary_the_client_has_not_seen(
    tmp_path: Path,
) -> None:
    """While a slot moves to a new primary, a command on a key the old owner does not have is
    redirected with ASK to a node that CLUSTER SLOTS does not list yet, and a script whose keys
    are split between the two nodes is refused with TRYAGAIN until the move ends."""
    with extra_cluster(tmp_path, **ENGINE, replicas_per_shard=0) as local:
        async with open_store(make_settings(local.url).redis, local.url) as store:
            await store.call("{m}:old", "SET", "{m}:old", "1", what="before")
            new = local.add_shard(slots=[]).ports[0]
            slot = key_slot(b"m")
            with single_node(HOST, new) as target:
                target_id = command(target, "CLUSTER", "MYID")
            owner = next(
                view
                for view in parse_cluster_nodes(_cluster_nodes(local))
                if view.primary and slot in view.slots
            )
            with single_node(HOST, new) as target, single_node(HOST, owner.port) as source:
                command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", owner.id)
                command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            # Absent from the old owner: ASK, to the new node (whose script cache is empty).
            assert await store.call("{m}:new", "SET", "{m}:new", "1", what="ask") is True
            incr = LuaScript("return redis.call('INCR', KEYS[1])")
            assert await incr(store, keys=["{m}:new"], args=[], what="ask script") == 2
            assert await store.run(lambda r: r.get("{m}:new"), what="ask general") == "2"
            # One key on each side: TRYAGAIN for longer than redis-py's own redirections last,
            # until remove-shard finishes the open move (then moves the slot back).
            both = LuaScript("return redis.call('GET', KEYS[1]) .. redis.call('GET', KEYS[2])")

            def close_later() -> None:
                time.sleep(1.5)
                local.remove_shard()

            finish = asyncio.get_running_loop().run_in_executor(None, close_later)
            assert await both(store, keys=["{m}:old", "{m}:new"], args=[], what="split") == "12"
            await finish


@pytest.mark.slow
def test_a_shard_left_joining_by_an_interrupted_add_is_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    with extra_cluster(
        tmp_path, **ENGINE, replicas_per_shard=0, base_port=free_base_port()
    ) as local:
        joined = local.add_shard(slots=[])
        # As if add-shard had died after its nodes met the cluster, before it recorded them.
        write_added_shards(local.spec.data_dir, [AddedShard(joined.ports, ShardState.JOINING)])
        again = LocalCluster(local.spec)
        again.start()
        assert again.ports == local.ports[:3]
        assert read_added_shards(local.spec.data_dir) == []
        assert port_free(HOST, joined.ports[0])
        assert not (local.spec.data_dir / f"node-{joined.ports[0]}").exists()
        assert len(parse_cluster_nodes(_cluster_nodes(again))) == 3


def _cluster_nodes(local: LocalCluster) -> str:
    with single_node(HOST, local.nodes[0].port) as client:
        text: str = command(client, "CLUSTER", "NODES")
    return text


@dataclass
class Tally:
    """Requests sent through the app and the ones that did not answer as expected."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)

    async def send(
        self, call: Awaitable[httpx.Response], expected: set[int], what: str
    ) -> httpx.Response | None:
        self.requests += 1
        try:
            answer = await call
        except Exception as exc:  # a request that raised is a failed request
            self.failures.append(f"{what}: {type(exc).__name__}: {exc}")
            return None
        if answer.status_code not in expected:
            self.failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
            return None
        return answer


@dataclass
class MixedTraffic:
    """What every kind of client did, acknowledged, and saw, to check after the resizes."""

    http: httpx.AsyncClient
    tally: Tally = field(default_factory=Tally)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the producers have stopped: the consumers then drain what is left.
    produced: asyncio.Event = field(default_factory=asyncio.Event)
    reads: Counter[str] = field(default_factory=Counter)
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[int, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    topic_published: set[str] = field(default_factory=set)
    topic_acked: set[str] = field(default_factory=set)
    # Each browser, its CSRF token and what it wrote to its session.
    sessions: list[tuple[httpx.AsyncClient, str, dict[str, int]]] = field(default_factory=list)
    assigned: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        """Return another client of the same app with its own cookies (a browser)."""
        return httpx.AsyncClient(transport=self.http._transport, base_url="http://test")

    async def read_profiles(self, offset: int) -> None:
        for turn in itertools.count(offset, 7):
            if self.stop.is_set():
                return
            user = READ_USERS[turn % len(READ_USERS)]
            answer = await self.tally.send(self.http.get(f"/profile/{user}"), {200}, "read")
            if answer is not None:
                self.reads[user] += 1

    async def write_profiles(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            user, body = f"writer-{n}", {"name": f"writer {n}"}
            created = await self.tally.send(
                self.http.post(f"/profile/{user}", json=body), {201}, "create profile"
            )
            if created is not None:
                self.profiles[user] = body
            if n % 4 == 3:
                gone = f"writer-{n - 2}"
                if await self.tally.send(
                    self.http.delete(f"/profile/{gone}"), {200}, "delete profile"
                ):
                    self.deleted.add(gone)

    async def write_customers(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            fields = {"name": f"customer {n}", "balance": n}
            created = await self.tally.send(
                self.http.post("/customers", json=fields), {201}, "create customer"
            )
            if created is None:
                continue
            customer_id = created.json()["id"]
            self.customers[customer_id] = fields
            change = {"balance": n + 1, "vip": n % 2 == 0}
            if await self.tally.send(
                self.http.put(f"/customers/{customer_id}", json=change), {204}, "update customer"
            ):
                self.customers[customer_id] = {**fields, **change}

    async def publish(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            answer = await self.tally.send(
                self.http.post(f"/queues/{QUEUE}/messages", json={"body": n, "dedupe_id": f"m{n}"}),
                {201},
                "publish",
            )
            if answer is not None:
                self.published[n] = answer.json()["id"]

    async def consume(self, name: str, *, until_drained: Callable[[], bool]) -> None:
        while not (self.produced.is_set() and until_drained()):
            answer = await self.tally.send(
                self.http.post(
                    f"/queues/{QUEUE}/receive", json={"max": 5, "wait_s": 0.2, "consumer": name}
                ),
                {200},
                "receive",
            )
            for message in answer.json()["messages"] if answer is not None else []:
                self.deliveries.append((message["id"], message["attempt"]))
                settled = await self.tally.send(
                    self.http.post(
                        f"/queues/{QUEUE}/messages/{message['id']}/ack",
                        json={"receipt": message["receipt"]},
                    ),
                    {204},
                    "ack",
                )
                if settled is not None:
                    self.acked.add(message["id"])

    async def publish_topic(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            answer = await self.tally.send(
                self.http.post(f"/topics/{TOPIC}/messages", json={"body": n}),
                {201},
                "publish to topic",
            )
            if answer is not None:
                self.topic_published.add(answer.json()["id"])
            await asyncio.sleep(0.01)

    async def consume_topic(self, *, until_drained: Callable[[], bool]) -> None:
        while not (self.produced.is_set() and until_drained()):
            answer = await self.tally.send(
                self.http.post(
                    f"/topics/{TOPIC}/groups/{GROUP}/receive",
                    json={"max": 10, "wait_s": 0.2, "consumer": "c1"},
                ),
                {200},
                "receive from topic",
            )
            for message in answer.json()["messages"] if answer is not None else []:
                if await self.tally.send(
                    self.http.post(
                        f"/topics/{TOPIC}/groups/{GROUP}/messages/{message['id']}/ack",
                        json={"receipt": message["receipt"]},
                    ),
                    {204},
                    "ack topic",
                ):
                    self.topic_acked.add(message["id"])

    async def write_sessions(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            if n % 5 == 0:
                browser = self.client()
                form = await self.tally.send(browser.get("/session/save"), {200}, "session form")
                if form is None:
                    continue
                token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
                saved = await self.tally.send(
                    browser.post(
                        "/session/save", data={"user_name": f"user {n}", "csrf_token": token}
                    ),
                    {303},
                    "log in",
                )
                if saved is None:
                    continue
                data = await self.tally.send(browser.get("/session/data"), {200}, "session data")
                if data is None:
                    continue
                self.sessions.append((browser, data.json()["csrf_token"], {}))
            if not self.sessions:
                continue
            browser, csrf, written = self.sessions[-1]
            if await self.tally.send(
                browser.patch("/session/data", json={f"k{n}": n}, headers={"X-CSRF-Token": csrf}),
                {200},
                "session write",
            ):
                written[f"k{n}"] = n

    async def assign_trips(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            # A region (slot) of its own for each trip, spread over the map.
            place = {"lat": -60.0 + (n * 7) % 120 + 0.5, "lon": -170.0 + (n * 13) % 340 + 0.5}
            driver = await self.tally.send(
                self.http.post(
                    "/drivers", json={"name": f"driver {n}", "car": "car", "location": place}
                ),
                {201},
                "register driver",
            )
            trip = await self.tally.send(
                self.http.post(
                    "/trips", json={"requester": f"r{n}", "pickup": place, "dropoff": place}
                ),
                {201},
                "request trip",
            )
            if driver is None or trip is None:
                continue
            trip_id, driver_id = trip.json()["id"], driver.json()["id"]
            if await self.tally.send(
                self.http.post(f"/trips/{trip_id}/assign", json={"driver_id": driver_id}),
                {200},
                "assign trip",
            ):
                self.assigned[trip_id] = driver_id


def quarter_with(local: LocalCluster, hot: set[int]) -> set[int]:
    """Return a quarter of the slots, an even part from each primary, ``hot`` among them."""
    primaries = [view for view in parse_cluster_nodes(_cluster_nodes(local)) if view.primary]
    share, extra = divmod(TOTAL_SLOTS // 4, len(primaries))
    chosen: set[int] = set()
    for rank, view in enumerate(primaries):
        wanted = share + (1 if rank < extra else 0)
        mine = sorted(view.slots & hot)
        chosen.update(mine)
        chosen.update(sorted(view.slots - hot)[: wanted - len(mine)])
    return chosen


def resize(spec: ClusterSpec, add: bool, slots: set[int] | None) -> Resized:
    """Add or remove a shard (in a process of its own, so the traffic does not slow it)."""
    local = LocalCluster(spec)
    return local.add_shard(slots=slots) if add else local.remove_shard()


@pytest.fixture
async def resizer() -> AsyncIterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def redis_figures() -> Counter[str]:
    """Return this process's Redis retry, error and redirection counters, by their labels."""
    found: Counter[str] = Counter()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name.startswith(f"{PREFIX}_redis_") and sample.name.endswith("_total"):
                kind = ",".join(value for _label, value in sorted(sample.labels.items()))
                found[f"{sample.name.removeprefix(PREFIX + '_redis_')}[{kind}]"] += int(
                    sample.value
                )
    return found


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


@pytest.mark.slow
@pytest.mark.chaos
async def test_a_shard_joins_and_leaves_under_mixed_traffic_without_a_failed_request(
    tmp_path: Path, resizer: ProcessPoolExecutor
) -> None:
    with extra_cluster(tmp_path, **ENGINE, base_port=free_base_port()) as local:
        try:
            await _scale_out_and_in(local, resizer)
        finally:
            local.stop()  # the added shard's nodes too, should a resize have failed


async def _scale_out_and_in(local: LocalCluster, resizer: ProcessPoolExecutor) -> None:
    # Each service as its own ACL user: the new nodes load the same users.
    settings = make_settings(local.url, services=SERVICE_TESTS)
    # Nodes started by the resizing process end with it only if told to.
    spec = replace(local.spec, die_with_parent=False)
    loop = asyncio.get_running_loop()
    async with (
        RedisCluster.from_url(local.url, decode_responses=True) as redis,
        running_app(settings) as (http, _state),
    ):
        for user in READ_USERS:
            assert (await http.post(f"/profile/{user}", json={"n": user})).status_code == 201
        lease = {"visibility_timeout_s": VISIBILITY_S}
        assert (await http.put(f"/queues/{QUEUE}", json=lease)).status_code == 201
        assert (await http.put(f"/topics/{TOPIC}", json=lease)).status_code == 201
        assert (await http.put(f"/topics/{TOPIC}/groups/{GROUP}")).status_code == 201
        traffic = MixedTraffic(http)
        hot = {
            key_slot(name.encode())
            for name in (
                "profile:events",
                "{queue:" + QUEUE + "}",
                "{topic:" + TOPIC + "}",
                "messaging:queues",
                "messaging:topics",
                "trips:regions",
            )
        }
        slots = quarter_with(local, hot)
        assert hot <= slots, "the busiest keys move too"

        def queue_drained() -> bool:
            return set(traffic.published.values()) <= traffic.acked

        def topic_drained() -> bool:
            return traffic.topic_published <= traffic.topic_acked

        producers = [
            *(asyncio.create_task(traffic.read_profiles(n)) for n in range(3)),
            asyncio.create_task(traffic.write_profiles()),
            asyncio.create_task(traffic.write_customers()),
            asyncio.create_task(traffic.publish()),
            asyncio.create_task(traffic.publish_topic()),
            asyncio.create_task(traffic.write_sessions()),
            asyncio.create_task(traffic.assign_trips()),
        ]
        consumers = [
            *(
                asyncio.create_task(traffic.consume(f"c{n}", until_drained=queue_drained))
                for n in range(2)
            ),
            asyncio.create_task(traffic.consume_topic(until_drained=topic_drained)),
        ]
        began, before = time.monotonic(), redis_figures()
        await asyncio.sleep(1.5)
        added = await loop.run_in_executor(resizer, resize, spec, True, slots)
        requests_at_join = traffic.tally.requests
        await asyncio.sleep(1.0)
        removed = await loop.run_in_executor(resizer, resize, spec, False, None)
        await asyncio.sleep(1.0)
        traffic.stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), timeout=30)
        traffic.produced.set()
        await asyncio.wait_for(asyncio.gather(*consumers), timeout=30)
        elapsed = time.monotonic() - began
        print(
            f"requests={traffic.tally.requests} failures={len(traffic.tally.failures)} "
            f"duration={elapsed:.1f}s added: {added.slots_moved} slots in {added.seconds:.1f}s "
            f"(requests by then {requests_at_join}), removed: {removed.slots_moved} slots in "
            f"{removed.seconds:.1f}s; redis: {dict(redis_figures() - before)}"
        )
        kinds = Counter(failure[:160] for failure in traffic.tally.failures)
        assert traffic.tally.failures == [], kinds.most_common(20)
        assert added.slots_moved == len(slots) == TOTAL_SLOTS // 4
        assert removed.slots_moved == TOTAL_SLOTS // 4
        assert all(port_free(HOST, port) for port in added.ports), "removed nodes stopped"
        assert len(local.ports) == NODES

        # Every acknowledged write reads back, through the app.
        for user, body in traffic.profiles.items():
            answer = await http.get(f"/profile/{user}")
            expected = 404 if user in traffic.deleted else 200
            assert answer.status_code == expected, user
            if expected == 200:
                assert answer.json() == body
        for customer_id, fields in traffic.customers.items():
            answer = await http.get(f"/customers/{customer_id}")
            assert answer.status_code == 200
            assert answer.json() == {**fields, "id": customer_id}
        for browser, _csrf, written in traffic.sessions:
            answer = await browser.get("/session/data")
            assert answer.status_code == 200
            assert written.items() <= answer.json()["data"].items()
            await browser.aclose()
        for trip_id, driver_id in traffic.assigned.items():
            trip = (await http.get(f"/trips/{trip_id}")).json()
            assert (trip["status"], trip["driver"]["id"]) == ("assigned", driver_id)

        # Messages: each published once, acknowledged, never handed out twice within a lease.
        ids = set(traffic.published.values())
        assert len(ids) == len(traffic.published)
        assert ids <= traffic.acked
        assert max(Counter(traffic.deliveries).values()) == 1
        for message_id in ids:
            events = (await http.get(f"/messages/{message_id}/trace")).json()["events"]
            delivered = [e for e in events if e["event"] == "delivered"]
            for earlier, later in itertools.pairwise(delivered):
                assert (at(later) - at(earlier)).total_seconds() >= VISIBILITY_S, message_id
        assert traffic.topic_published <= traffic.topic_acked

        # The read counts: exactly the reads in the stream, and at least those answered.
        await eventually(lambda: all_events_applied(redis), within_s=30, what="catch-up")
        counts = await stored_read_counts(redis)
        assert counts == await expected_read_counts(redis)
        for user, reads in traffic.reads.items():
            assert counts[user] >= reads, user


@pytest.mark.slow
def test_add_and_remove_a_shard_on_a_running_service(service: Service) -> None:
    service.start()
    users = [f"user-{n}" for n in range(50)]
    with httpx.Client(base_url=service.url, timeout=10) as http:
        for user in users:
            assert http.post(f"/profile/{user}", json={"n": user}).status_code == 201

        added = run_cli(["-m", "app", "cluster", "add-shard"], service.env)
        assert added.returncode == 0, added.stderr
        said = re.fullmatch(
            r"added the shard on ports (\d+), (\d+): moved 4096 slots in [\d.]+ s",
            added.stdout.strip().splitlines()[-1],
        )
        assert said is not None, added.stdout
        first, second = int(said[1]), int(said[2])
        # The next free ports above the cluster's.
        assert service.base_port + NODES <= first < second
        with single_node(HOST, first) as new:
            views = parse_cluster_nodes(command(new, "CLUSTER", "NODES"))
        assert len(views) == NODES + 2
        assert len(next(v for v in views if v.port == first).slots) == TOTAL_SLOTS // 4
        for user in users:
            assert http.get(f"/profile/{user}").json() == {"n": user}

        # The service's own stop takes the added nodes along; its next start adopts them.
        service.signal(signal.SIGTERM)
        assert all(port_free(HOST, port) for port in (service.base_port, first, second))
        service.start()
        assert http.get("/readyz").status_code == 200
        for user in users:
            assert http.get(f"/profile/{user}").json() == {"n": user}

        removed = run_cli(["-m", "app", "cluster", "remove-shard"], service.env)
        assert removed.returncode == 0, removed.stderr
        assert (
            removed.stdout.strip()
            .splitlines()[-1]
            .startswith(f"removed the shard on ports {first}, {second}: moved 4096 slots in ")
        )
        assert all(port_free(HOST, port) for port in (first, second)), "removed nodes stopped"
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        for user in users:
            assert http.get(f"/profile/{user}").json() == {"n": user}

        again = run_cli(["-m", "app", "cluster", "remove-shard"], service.env)
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            "error: nothing to remove: the embedded cluster has only its 3 configured shards "
            "(embedded.shards)"
        ]
    service.signal(signal.SIGTERM)
    assert all(port_free(HOST, service.base_port + n) for n in range(NODES)), "cluster stopped"


def test_cluster_commands_say_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    env = {"APP_EMBEDDED__DATA_DIR": str(tmp_path), "APP_EMBEDDED__BASE_PORT": "7900"}
    missing = run_cli(["-m", "app", "cluster", "add-shard"], env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: no embedded cluster in {tmp_path}: start it once with `python -m app serve`"
    ]
    elsewhere = run_cli(["-m", "app", "cluster", "remove-shard"], {"REDIS_URL": "redis://x:1"})
    assert elsewhere.returncode == 2
    assert len(elsewhere.stderr.strip().splitlines()) == 1
    assert "resizes the embedded local cluster only" in elsewhere.stderr
