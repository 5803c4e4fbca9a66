"""The users ``python -m app acl`` prints, on the real cluster: every node accepts them, and each
user can touch its own keys and nothing else, each key asked of the node that owns it.

The session cluster already has the services' users (``<service>-svc``, from its ACL file) for
the domain suites; these tests create the same rules under ``t-<service>-svc`` and delete them
afterwards, so neither disturbs the other.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import NoPermissionError, ResponseError

from app import acl
from app.customers import keys as customer_keys
from app.local_cluster import LocalCluster, command, single_node
from app.main import SERVICES
from app.messaging import keys as messaging_keys
from app.profiles import keys as profile_keys
from app.records.ids import new_ulid
from app.sessions import keys as session_keys
from app.slots import key_slot
from app.trips import keys as trip_keys
from app.users.schemas import User
from app.videos import keys as video_keys

HOST = "127.0.0.1"
PREFIX = "t-"

# One key of each service that owns keys, named by the service's own code. Reporting owns none:
# it reads what the profiles' aggregator writes.
OWN_KEYS = {
    "profiles": profile_keys.profile_key("acl-probe"),
    "customers": customer_keys.customer_key("acl-probe"),
    "users": User.key(new_ulid(slot=1234)),
    "sessions": session_keys.session_key(session_keys.user_tag("acl-probe"), "token"),
    "messaging": messaging_keys.queue_keys("acl-probe")[1],
    "videos": video_keys.video_key("acl-probe"),
    "trips": trip_keys.trip_key(new_ulid(slot=4321)),
}
# Another service's keys a user may touch by design, and how: reporting reads the profiles (it
# checks that a counted profile still exists). Videos use their own queue only, which the
# messaging key above is not.
SHARED = {("reporting", "profiles"): "read"}
# Reads and writes of one key, the first each user may run: a refusal then comes from the key.
READS = (("hgetall",), ("get",), ("exists",))
WRITES = (("hset", "f", "v"), ("set", "v"), ("zadd", "1", "m"))
ADMIN = (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory"), ("ACL", "LIST"))


def password(service: str) -> str:
    return f"t-{service}-acl-secret"


def name(service: str) -> str:
    return acl.user_name(service, prefix=PREFIX)


def printed(argv: list[str]) -> list[str]:
    """Return what ``python -m app acl <argv>`` prints on stdout, line by line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert acl.cli(argv) == 0
    return out.getvalue().splitlines()


def filled(line: str) -> list[str]:
    """Return an ``acl redis`` line as a command, its placeholder replaced (as envsubst does)."""
    for service in SERVICES:
        line = line.replace(acl.password_placeholder(service), password(service))
    return line.split()


def owner(cluster: LocalCluster, key: str) -> int:
    """Return the port of the primary that serves ``key``."""
    slot = key_slot(key)
    with single_node(HOST, cluster.primary_ports()[0]) as client:
        for first, last, primary, *_replicas in command(client, "CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(primary[1])
    raise AssertionError(f"no node serves slot {slot}")


def as_user(port: int, service: str) -> Redis:
    return Redis(
        host=HOST,
        port=port,
        username=name(service),
        password=password(service),
        decode_responses=True,
        socket_timeout=5,
    )


def first_allowed(service: str, choices: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    allowed = set(acl.command_rules(service))
    return next((c for c in choices if "+" + c[0] in allowed), choices[0])


@pytest.fixture
def users(cluster: LocalCluster) -> Iterator[list[str]]:
    """Run the printed ``acl redis`` lines (prefixed user names) on every node; yield them."""
    lines = printed(["redis", "--user-prefix", PREFIX])
    try:
        for port in cluster.ports:
            with single_node(HOST, port) as node:
                for line in lines:
                    assert command(node, *filled(line)) == "OK", (port, line)
        yield lines
    finally:
        for port in cluster.ports:
            with single_node(HOST, port) as node:
                command(node, "ACL", "DELUSER", *(name(service) for service in SERVICES))


def test_every_node_accepts_the_printed_users(cluster: LocalCluster, users: list[str]) -> None:
    assert [line.split()[2] for line in users] == [name(service) for service in SERVICES]
    for port in cluster.ports:
        with single_node(HOST, port) as node:
            assert set(command(node, "ACL", "USERS")) >= {name(s) for s in SERVICES}
            for service in SERVICES:
                # The password is the one the placeholder stood for.
                with as_user(port, service) as client:
                    assert client.ping() is True


@pytest.mark.skipif(
    not (shutil.which("envsubst") and shutil.which("redis-cli")), reason="envsubst, redis-cli"
)
def test_the_lines_pipe_through_envsubst_into_redis_cli(cluster: LocalCluster) -> None:
    """The way the docs create the users on a self-managed node."""
    lines = printed(["redis", "--user-prefix", "t-pipe-"])
    port = cluster.ports[0]
    environment = {acl.password_env(service): password(service) for service in SERVICES}
    try:
        filled = subprocess.run(
            ["envsubst"],
            input="\n".join(lines) + "\n",
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        answer = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(port)],
            input=filled,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert answer.splitlines() == ["OK"] * len(SERVICES)
        with single_node(HOST, port) as node:
            for service in SERVICES:
                user = acl.user_name(service, prefix="t-pipe-")
                assert command(node, "AUTH", user, password(service)) is True
    finally:
        with single_node(HOST, port) as node:
            command(node, "ACL", "DELUSER", *(f"t-pipe-{s}-svc" for s in SERVICES))


def test_the_shared_keys_are_the_declared_ones() -> None:
    """The skipped pairs below are exactly the data shared by design, nothing by accident."""
    overlapping = {
        (service, other)
        for service in SERVICES
        for other, key in OWN_KEYS.items()
        if other != service and _matches(service, key)
    }
    assert overlapping == set(SHARED)


def _matches(service: str, key: str) -> bool:
    patterns = [re.sub(r"^(%R|%W)?~", "", rule) for rule in acl.key_rules(service)]
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


@pytest.mark.parametrize("service", SERVICES)
def test_a_user_is_refused_other_services_keys(
    cluster: LocalCluster, users: list[str], service: str
) -> None:
    read, write = first_allowed(service, READS), first_allowed(service, WRITES)
    for other, key in OWN_KEYS.items():
        if other == service:
            continue
        with as_user(owner(cluster, key), service) as client:
            if SHARED.get((service, other)) == "read":
                command(client, read[0], key, *read[1:])
            else:
                _refused(client, read, key, service)
            _refused(client, write, key, service)


def _refused(client: Redis, call: tuple[str, ...], key: str, service: str) -> None:
    with pytest.raises(NoPermissionError) as refused:
        command(client, call[0], key, *call[1:])
    message = str(refused.value).lower()
    if "+" + call[0] in acl.command_rules(service):
        # The command is the user's: the key is what is refused.
        assert "key" in message, message
    else:
        assert f"'{call[0]}' command" in message, message


@pytest.mark.parametrize("service", SERVICES)
def test_a_user_is_refused_admin_commands_on_every_node(
    cluster: LocalCluster, users: list[str], service: str
) -> None:
    for port in cluster.ports:
        with as_user(port, service) as client:
            for call in ADMIN:
                with pytest.raises(NoPermissionError):
                    command(client, *call)


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "reporting"])
def test_a_user_may_read_and_write_its_own_keys(
    cluster: LocalCluster, users: list[str], service: str
) -> None:
    key = OWN_KEYS[service]
    port = owner(cluster, key)
    read, write = first_allowed(service, READS), first_allowed(service, WRITES)
    with as_user(port, service) as client:
        command(client, read[0], key, *read[1:])
    with single_node(HOST, port) as node:
        assert command(node, "ACL", "DRYRUN", name(service), write[0], key, *write[1:]) == "OK"


def test_reporting_reads_the_counts_and_profiles_and_writes_nothing(
    cluster: LocalCluster, users: list[str]
) -> None:
    profile = OWN_KEYS["profiles"]
    with as_user(owner(cluster, profile_keys.READ_COUNTS), "reporting") as client:
        assert client.zrevrange(profile_keys.READ_COUNTS, 0, 9) == []
        with pytest.raises(NoPermissionError):
            client.zadd(profile_keys.READ_COUNTS, {"ana": 1})
    with as_user(owner(cluster, profile), "reporting") as client:
        assert client.exists(profile) == 0
        with pytest.raises(NoPermissionError):
            client.hset(profile, "f", "v")


def test_videos_use_their_chunking_queue_and_no_other(
    cluster: LocalCluster, users: list[str]
) -> None:
    own = messaging_keys.queue_keys(video_keys.CHUNKING_QUEUE)[1]
    other = messaging_keys.queue_keys("acl-probe")[1]
    with single_node(HOST, owner(cluster, own)) as node:
        assert command(node, "ACL", "DRYRUN", name("videos"), "LPUSH", own, "m") == "OK"
    with single_node(HOST, owner(cluster, other)) as node:
        answer = command(node, "ACL", "DRYRUN", name("videos"), "LPUSH", other, "m")
        assert "no permissions" in answer.lower()


def test_memorydb_access_strings_are_valid_redis_7_rules(cluster: LocalCluster) -> None:
    """What MemoryDB gets as access strings, as ACL SETUSER rules of a Redis 7 node (the JSON
    module's commands aside: this node has no JSON)."""
    *creates, _acl = printed(["memorydb", "--user-prefix", "t-mdb-"])
    with single_node(HOST, cluster.ports[0]) as node:
        try:
            for line, service in zip(creates, SERVICES, strict=True):
                argv = shlex.split(line)
                rules = argv[argv.index("--access-string") + 1].split()
                assert rules[0] == "on"
                rules = [rule for rule in rules if not rule.startswith("+json.")]
                user = argv[argv.index("--user-name") + 1]
                assert command(node, "ACL", "SETUSER", user, "reset", *rules) == "OK", service
        finally:
            command(node, "ACL", "DELUSER", *(f"t-mdb-{s}-svc" for s in SERVICES))


def test_module_commands_only_where_the_server_has_the_module(cluster: LocalCluster) -> None:
    """Why ``--json`` is opt-in: ACL SETUSER refuses a command the server does not know."""
    (line,) = printed(["redis", "--services", "trips", "--json", "--user-prefix", "t-json-"])
    with single_node(HOST, cluster.ports[0]) as node:
        try:
            if "json.get" in node.command_list():
                assert command(node, *filled(line)) == "OK"
            else:
                with pytest.raises(ResponseError, match="json"):
                    command(node, *filled(line))
        finally:
            command(node, "ACL", "DELUSER", "t-json-trips-svc")
