"""The Redis client: plain Redis or cluster, ACL users, TLS, and the retry policy."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from app.acl import user_name
from app.config import RedisSettings
from app.errors import ServiceUnavailable
from app.local_cluster import (
    LocalCluster,
    TlsFiles,
    free_cluster_ports,
    single_node,
)
from app.redis import REQUEST_STARTED, RetryPolicy, connect_client, open_store
from tests.conftest import (
    PROJECT_ROOT,
    eventually,
    extra_cluster,
    make_settings,
    running_app,
    service_url,
)

SEED = {"email": "ana@example.com", "username": "Ana"}


async def profile_round_trip(
    url: str, *, services: tuple[str, ...] = (), **redis_settings: object
) -> None:
    """Create, read and report a profile through the app connected to ``url`` (as the services'
    own users, with ``services``)."""
    settings = make_settings(url, services=services)
    if redis_settings:
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update=redis_settings)}
        )
    async with running_app(settings) as (http, _state):
        assert (await http.post("/profile/ana", json=SEED)).status_code == 201
        assert (await http.get("/profile/ana")).json() == SEED
        assert (await http.get("/readyz")).status_code == 200

        async def counted() -> bool:
            stats = (await http.get("/reporting/profileStats/1")).json()
            return bool(stats == {"results": [{"user": "ana", "score": 1}]})

        await eventually(counted, what="the read to be counted")


@dataclass
class Standalone:
    """A plain (non-cluster) redis-server process."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def standalone_redis(tmp_path: Path) -> Iterator[Standalone]:
    """A plain (non-cluster) redis-server on a free port."""
    port = free_cluster_ports("127.0.0.1", 1)[0]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    server = Standalone(url=f"redis://127.0.0.1:{port}", process=process)
    try:
        for _ in range(100):
            try:
                with single_node("127.0.0.1", port) as node:
                    node.ping()
                break
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        yield server
    finally:
        server.stop()


async def detected_as_cluster(url: str) -> bool:
    client = await connect_client(RedisSettings(), url)
    try:
        return isinstance(client, RedisCluster)
    finally:
        await client.aclose()


@pytest.mark.default_engine_only
async def test_plain_redis_is_detected_and_works(standalone_redis: Standalone) -> None:
    assert await detected_as_cluster(standalone_redis.url) is False
    await profile_round_trip(standalone_redis.url)


async def test_cluster_is_detected(cluster: LocalCluster) -> None:
    assert await detected_as_cluster(cluster.url) is True


def test_the_readme_deploys_with_the_generated_users() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "python -m app acl memorydb --services profiles,reporting > users.sh" in readme
    assert f"rediss://{user_name('profiles')}:$PROFILES_REDIS_PASSWORD@" in readme


async def test_acl_users_in_the_urls(cluster: LocalCluster) -> None:
    """The generated users (on every node, as MemoryDB's ACLs put them), one per service."""
    await profile_round_trip(cluster.url, services=("profiles", "reporting"))


async def test_wrong_password_fails_at_once(cluster: LocalCluster) -> None:
    user = user_name("profiles")
    with pytest.raises(rexc.AuthenticationError):
        await asyncio.wait_for(
            connect_client(RedisSettings(), f"redis://{user}:wrong@127.0.0.1:{cluster.ports[0]}"), 5
        )


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 (an IP SAN: the cluster advertises IPs)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        cert=directory / "node.crt", key=directory / "node.key", ca=directory / "ca.crt"
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with extra_cluster(tmp_path, tls=make_tls_files(tmp_path)) as local:
        yield local


@pytest.mark.default_engine_only
@pytest.mark.slow
async def test_tls_cluster_with_rediss_url(tls_cluster: LocalCluster) -> None:
    assert tls_cluster.url.startswith("rediss://")
    assert tls_cluster.spec.tls is not None
    ca = str(tls_cluster.spec.tls.ca)
    await profile_round_trip(tls_cluster.url, tls_ca_file=ca)
    tls_cluster.flushall()
    # The same over TLS with an ACL user per service: profiles and reporting, each its own.
    await profile_round_trip(tls_cluster.url, services=("profiles", "reporting"), tls_ca_file=ca)
    customers = service_url(tls_cluster.url, "customers")
    assert customers.startswith("rediss://customers-svc:")
    async with open_store(RedisSettings(tls_ca_file=ca), customers) as store:
        with pytest.raises(rexc.NoPermissionError):
            await store.call("profile:ana", "HGETALL", "profile:ana", what="test")
        with pytest.raises(rexc.NoPermissionError):
            await store.run(lambda client: client.flushall(), what="test")


@pytest.mark.default_engine_only
async def test_tls_with_an_untrusted_ca_is_refused(tls_cluster: LocalCluster) -> None:
    with pytest.raises(rexc.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.wait_for(connect_client(RedisSettings(), tls_cluster.url), 5)


class Flaky:
    """An operation that fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


POLICY = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.002)


@pytest.mark.parametrize(
    "error",
    [
        rexc.ConnectionError("reset"),
        rexc.TimeoutError("slow"),
        rexc.ClusterDownError("CLUSTERDOWN"),
        rexc.TryAgainError("TRYAGAIN"),
        rexc.ReadOnlyError("READONLY"),
    ],
)
async def test_transient_errors_are_retried(error: Exception) -> None:
    operation = Flaky(3, error)
    assert await POLICY.run(operation, what="test") == "done"
    assert operation.calls == 4


async def test_spent_retries_are_service_unavailable() -> None:
    operation = Flaky(10, rexc.ConnectionError("down"))
    with pytest.raises(ServiceUnavailable):
        await POLICY.run(operation, what="test")
    assert operation.calls == 4


async def test_the_deadline_ends_retries_in_time() -> None:
    policy = RetryPolicy(attempts=1000, base_s=0.01, cap_s=0.02, deadline_s=0.3)
    operation = Flaky(10_000, rexc.ConnectionError("down"))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await policy.run(operation, what="test")
    assert time.monotonic() - started < 0.35
    assert 5 < operation.calls < 1000, "retried until the deadline, not the attempts"


async def test_a_requests_operations_share_its_deadline() -> None:
    policy = RetryPolicy(attempts=1000, base_s=0.01, cap_s=0.02, deadline_s=0.3)
    token = REQUEST_STARTED.set(time.monotonic() - 0.25)  # the request began 0.25 s ago
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await policy.run(Flaky(10_000, rexc.ConnectionError("down")), what="test")
        assert time.monotonic() - started < 0.1, "only what was left of the request's 0.3 s"
    finally:
        REQUEST_STARTED.reset(token)


async def test_an_attempt_hanging_past_the_deadline_is_cut() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.01, cap_s=0.02, timeout_s=5.0, deadline_s=0.2)

    async def hangs() -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await policy.run(hangs, what="test")
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize(
    "error",
    [
        rexc.AuthenticationError("bad password"),
        rexc.ResponseError("WRONGTYPE"),
        AttributeError("a bug of ours, not redis-py's"),
        RuntimeError("a bug of ours, not the transport's"),
    ],
)
async def test_permanent_errors_are_not_retried(error: Exception) -> None:
    operation = Flaky(1, error)
    with pytest.raises(type(error)):
        await POLICY.run(operation, what="test")
    assert operation.calls == 1


def test_backoff_grows_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_s=0.1, cap_s=1.0)
    assert 0.05 <= policy.delay(0) <= 0.1
    assert 0.4 <= policy.delay(3) <= 0.8
    assert 0.5 <= policy.delay(9) <= 1.0


@pytest.mark.slow
@pytest.mark.chaos
async def test_writes_ride_out_a_primary_crash(cluster: LocalCluster) -> None:
    settings = make_settings(cluster.url)
    settings = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"retry_attempts": 30})}
    )
    primaries = cluster.primary_ports()
    victim = cluster.ports.index(primaries[0])
    acknowledged: list[str] = []
    async with running_app(settings) as (http, _state):

        async def writer(index: int) -> None:
            for turn in range(60):
                user = f"w{index}-{turn}"
                answer = await http.post(f"/profile/{user}", json={"n": str(turn)})
                assert answer.status_code in (201, 503), answer.text
                if answer.status_code == 201:
                    acknowledged.append(user)
                await asyncio.sleep(0.05)

        writers = asyncio.gather(*(writer(i) for i in range(8)))
        await asyncio.sleep(0.5)
        cluster.kill_node(victim)
        await writers
        assert len(acknowledged) >= 0.9 * 8 * 60
        for user in acknowledged:
            answer = await http.get(f"/profile/{user}")
            assert answer.status_code == 200, f"acknowledged profile {user} lost"
    cluster.restart_node(victim)
    assert primaries[0] not in cluster.primary_ports()


async def test_a_write_to_a_transport_the_server_closed_is_retried() -> None:
    """Under uvloop, redis-py writing to a connection the server closed gets RuntimeError from
    the transport (seen in a failover test as a 500): transient, as redis-py's own errors from
    its connection code. The same error from elsewhere is not (test below)."""
    raised_by: dict[str, object] = {}
    # Frames with the files a real traceback has.
    exec(
        compile(
            "def ensure_alive():\n"
            "    raise RuntimeError('unable to perform operation on <TCPTransport closed=True>;"
            " the handler is closed')\n",
            str(Path("uvloop", "handles", "handle.pyx")),
            "exec",
        ),
        raised_by,
    )
    exec(
        compile(
            "def send_packed_command():\n    ensure_alive()\n",
            str(Path("site-packages", "redis", "asyncio", "connection.py")),
            "exec",
        ),
        raised_by,
    )
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            send = raised_by["send_packed_command"]
            assert callable(send)
            send()
        return "done"

    assert await POLICY.run(operation, what="test") == "done"
    assert calls == 2


async def test_redis_py_closed_connection_bug_is_retried() -> None:
    """redis-py #4287: AttributeError from a connection the server closed is transient."""
    code = compile(
        "raise AttributeError(\"'NoneType' object has no attribute 'writelines'\")",
        str(Path("site-packages", "redis", "asyncio", "connection.py")),
        "exec",
    )
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            exec(code)
        return "done"

    assert await POLICY.run(operation, what="test") == "done"
    assert calls == 2


async def test_single_key_call_follows_moved_from_a_stale_slot_table(
    cluster: LocalCluster,
) -> None:
    async with open_store(RedisSettings(), cluster.url) as store:
        client = store.client
        assert isinstance(client, RedisCluster)
        await client.hset("profile:ana", mapping=dict(SEED.items()))
        slot = client.keyslot("profile:ana")
        right = client.nodes_manager.slots_cache[slot][0]
        wrong = next(node for node in client.get_primaries() if node.name != right.name)
        client.nodes_manager.slots_cache[slot] = [wrong]  # as after a slot migration

        fields = await store.call("profile:ana", "HGETALL", "profile:ana", what="test")

        assert fields == SEED
        mended = client.get_node_from_key("profile:ana")
        assert mended is not None
        assert mended.name == right.name


@pytest.mark.default_engine_only
async def test_redis_down_is_503_with_retry_after_and_not_ready(
    standalone_redis: Standalone,
) -> None:
    settings = make_settings(standalone_redis.url)
    settings = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"retry_attempts": 2})}
    )
    async with running_app(settings) as (http, _state):
        assert (await http.post("/profile/ana", json=SEED)).status_code == 201
        standalone_redis.stop()
        answer = await http.get("/profile/ana")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert "unavailable" in answer.json()["message"]
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["message"].startswith("redis unreachable")


async def test_an_attempt_that_hangs_times_out_and_is_retried() -> None:
    policy = RetryPolicy(attempts=2, base_s=0.001, cap_s=0.002, timeout_s=0.05)
    calls = 0

    async def hangs() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(policy.run(hangs, what="test"), 2)
    assert calls == 3
