"""Start, adopt, supervise and stop a local Redis Cluster on loopback.

One implementation serves the embedded default of ``python -m app serve`` (fixed ports, data kept
under the project so a restart reuses it) and the test suite (free ports, a temporary directory).
Every node runs with ``appendonly yes`` and ``appendfsync always``: a write the server has
acknowledged is on disk before the reply leaves, so it survives a restart of everything.

Nodes are ``redis-server`` processes by default. Where a Docker engine is reachable, the same
cluster can run as containers (``ContainerNode``, host networking so the addresses the cluster
advertises are the loopback addresses the client dials); creation, readiness and fault injection
are shared.

A cluster of processes can grow and shrink while it serves (``add_shard``, ``remove_shard``;
``python -m app cluster add-shard``): a shard's primary and replicas join, and slots move to it
key by key as ``redis-cli --cluster rebalance`` moves them (CLUSTER SETSLOT IMPORTING and
MIGRATING, MIGRATE, SETSLOT NODE on every primary), so clients see only ASK, TRYAGAIN and MOVED
answers. The shards added are kept in ``added-shards.json`` beside the nodes' directories, so
the next start adopts them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import redis

from app.redis import parse_cluster_info

logger = logging.getLogger(__name__)

TOTAL_SLOTS = 16384
READY_POLL_S = 0.1
STOP_GRACE_S = 10.0
SUPERVISE_INTERVAL_S = 1.0
PR_SET_PDEATHSIG = 1

# Beside the nodes' directories: the shards added since the cluster was created (the
# configuration names only the first ones), so the next start adopts them.
ADDED_SHARDS_FILE = "added-shards.json"
# Held while a shard is added or removed: one resize at a time per data directory.
RESIZE_LOCK_FILE = "resize.lock"
# Keys per MIGRATE: few round trips for a slot of small keys, a short block of the source node.
MIGRATE_BATCH = 100
# Slots moved together: one pipeline per node and step for the whole batch.
MOVE_BATCH = 16
# Batches moved at once, each on connections of its own.
MOVERS = 8
MIGRATE_TIMEOUT_MS = 10_000
PROGRESS_EVERY = 1024

INSTALL_HINT = (
    "redis-server was not found on PATH: install it (Debian/Ubuntu: "
    "`apt-get install -y redis-server`, macOS: `brew install redis`) "
    "or set REDIS_URL to use an existing Redis or Redis Cluster"
)


class LocalClusterError(RuntimeError):
    """The local cluster could not be started or did not become ready."""


class RedisServerNotFound(LocalClusterError):
    """The ``redis-server`` binary is missing."""


class NothingToRemove(LocalClusterError):
    """remove-shard on a cluster that has only the shards it was created with."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only cluster: nodes, replication and the cluster bus all use TLS."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ClusterSpec:
    """Shape and placement of a local cluster (as created: shards added later are in
    ``added-shards.json``)."""

    data_dir: Path
    host: str = "127.0.0.1"
    base_port: int | None = None
    shards: int = 3
    replicas_per_shard: int = 1
    redis_server: str = "redis-server"
    node_timeout_ms: int = 2000
    tls: TlsFiles | None = None
    # Users every node loads at start (``--aclfile``), so a restarted node keeps them.
    acl_file: Path | None = None
    # Modules every node loads (``--loadmodule``): the JSON module's rejson.so, for example.
    modules: tuple[Path, ...] = ()
    # Tests: the nodes end with the process that started them, even when it is killed. The
    # embedded default keeps them, so a service killed with SIGKILL finds them again.
    die_with_parent: bool = False

    @property
    def size(self) -> int:
        return self.shards * (1 + self.replicas_per_shard)


class Node(Protocol):
    """One cluster node, however it runs."""

    port: int

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def kill(self) -> None: ...

    def terminate(self) -> None: ...

    def wait_stopped(self, timeout: float) -> bool: ...


def node_args(spec: ClusterSpec, port: int, directory: str) -> list[str]:
    """Return the redis-server arguments for a durable cluster node."""
    listen = ["--port", str(port)]
    if spec.tls is not None:
        listen = [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--tls-auth-clients",
            "no",
            "--tls-cert-file",
            str(spec.tls.cert),
            "--tls-key-file",
            str(spec.tls.key),
            "--tls-ca-cert-file",
            str(spec.tls.ca),
        ]
    users = ["--aclfile", str(spec.acl_file)] if spec.acl_file is not None else []
    modules = [arg for module in spec.modules for arg in ("--loadmodule", str(module))]
    return [
        *listen,
        *users,
        *modules,
        "--bind", spec.host,
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(spec.node_timeout_ms),
        "--cluster-require-full-coverage", "no",
        "--dir", directory,
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--enable-debug-command", "local",
        "--repl-diskless-sync-delay", "0",
        "--daemonize", "no",
        "--pidfile", f"{directory}/redis.pid",
        "--logfile", f"{directory}/redis.log",
    ]  # fmt: skip


@dataclass
class ProcessNode:
    """A ``redis-server`` child process; adopts a node left running by an earlier start."""

    spec: ClusterSpec
    port: int
    binary: str
    directory: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _pid: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.directory = self.spec.data_dir / f"node-{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.adopt():
            return
        if not port_free(self.spec.host, self.port) or not port_free(
            self.spec.host, self.port + 10000
        ):
            raise LocalClusterError(
                f"port {self.port} or {self.port + 10000} on {self.spec.host} is taken by "
                "another program: choose another embedded.base_port"
            )
        # A new session keeps Ctrl-C in the terminal from killing the nodes before the
        # service has drained; stop() shuts them down in order.
        with self._startup_errors().open("wb") as errors:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                [self.binary, *node_args(self.spec, self.port, str(self.directory))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                preexec_fn=_terminate_with_parent if self.spec.die_with_parent else None,
            )
        self._pid = self._process.pid

    def adopt(self) -> bool:
        """Take over the node if it runs already (an earlier start, another process's)."""
        adopted = self._running_pid()
        if adopted is None:
            return False
        logger.info("adopting redis node port=%d pid=%d", self.port, adopted)
        self._pid = adopted
        self._process = None
        return True

    def _running_pid(self) -> int | None:
        pidfile = self.directory / "redis.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            with single_node(self.spec.host, self.port, self.spec.tls) as node:
                node.ping()
        except redis.RedisError:
            return None
        return pid

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.wait_stopped(STOP_GRACE_S)

    def terminate(self) -> None:
        # redis-server shuts down cleanly on SIGTERM: fsyncs the append-only file and exits.
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self._pid is None:
            # Started by another process (``python -m app cluster add-shard``): its pidfile.
            self._pid = self._running_pid()
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None:
                if self._process.poll() is not None:
                    return True
            elif self._pid is None or not pid_alive(self._pid):
                return True
            time.sleep(0.05)
        return False

    def _startup_errors(self) -> Path:
        return self.directory / "startup-errors.log"

    def failure_output(self) -> str:
        """Return what a node that exited at start printed, for the error message."""
        try:
            return self._startup_errors().read_text(errors="replace").strip()
        except OSError:
            return ""


@dataclass
class ContainerNode:
    """A node run by testcontainers in a Docker container on the host network."""

    spec: ClusterSpec
    port: int
    image: str
    _container: Any = field(default=None, init=False)

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        args = node_args(self.spec, self.port, "/data")
        container = DockerContainer(self.image).with_kwargs(network_mode="host")
        if self.spec.acl_file is not None:
            # At the same (absolute) path inside, which the arguments name.
            path = self.spec.acl_file.resolve()
            container = container.with_volume_mapping(path, str(path), "ro")
        self._container = container.with_command(["redis-server", *args]).start()

    def alive(self) -> bool:
        if self._container is None:
            return False
        self._container.get_wrapped_container().reload()
        return bool(self._container.get_wrapped_container().status == "running")

    def kill(self) -> None:
        if self._container is not None:
            self._container.get_wrapped_container().kill()

    def terminate(self) -> None:
        if self._container is not None:
            self._container.get_wrapped_container().stop()

    def wait_stopped(self, timeout: float) -> bool:
        if self._container is not None:
            self._container.stop()
            self._container = None
        return True


class ShardState(StrEnum):
    """Where an added shard is in its life (``added-shards.json``)."""

    # Its nodes start and meet the cluster; it holds no slots. Interrupted: removed at the
    # next start or resize.
    JOINING = "joining"
    # Part of the cluster from here on: started, supervised and stopped with the others.
    REBALANCING = "rebalancing"
    READY = "ready"
    DRAINING = "draining"
    # Holds no slots any more; being forgotten and stopped. Interrupted: finished at the next
    # start or resize.
    LEAVING = "leaving"


SERVING = frozenset({ShardState.REBALANCING, ShardState.READY, ShardState.DRAINING})


@dataclass
class AddedShard:
    """A shard added to the cluster after it was created: its ports, its primary's first."""

    ports: tuple[int, ...]
    state: ShardState


def read_added_shards(data_dir: Path) -> list[AddedShard]:
    """Return the shards recorded as added to the cluster in ``data_dir``, oldest first."""
    path = data_dir / ADDED_SHARDS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise LocalClusterError(f"{path} cannot be read: {exc}") from exc
    try:
        return [
            AddedShard(tuple(int(port) for port in shard["ports"]), ShardState(shard["state"]))
            for shard in raw["shards"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise LocalClusterError(f"{path} does not list shards as expected: {exc!r}") from exc


def write_added_shards(data_dir: Path, shards: Sequence[AddedShard]) -> None:
    """Record the added shards (atomically: a reader sees the old list or the new one)."""
    path = data_dir / ADDED_SHARDS_FILE
    if not shards:
        path.unlink(missing_ok=True)
        return
    listed = [{"ports": list(shard.ports), "state": shard.state.value} for shard in shards]
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"shards": listed}, indent=2) + "\n")
    partial.replace(path)


@dataclass(frozen=True)
class NodeView:
    """One node as a line of CLUSTER NODES describes it."""

    id: str
    port: int
    primary: bool
    myself: bool
    slots: frozenset[int]
    # The node's own open slots (CLUSTER NODES shows them on its own line only): slot -> the
    # id of the node the slot moves to, or comes from.
    migrating: Mapping[int, str]
    importing: Mapping[int, str]


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """Parse a CLUSTER NODES reply."""
    found: list[NodeView] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = set(fields[2].split(","))
        slots: set[int] = set()
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for item in fields[8:]:
            if item.startswith("["):
                body = item.strip("[]")
                if "->-" in body:
                    slot, other = body.split("->-")
                    migrating[int(slot)] = other
                elif "-<-" in body:
                    slot, other = body.split("-<-")
                    importing[int(slot)] = other
            elif "-" in item:
                first, last = item.split("-")
                slots.update(range(int(first), int(last) + 1))
            else:
                slots.add(int(item))
        found.append(
            NodeView(
                id=fields[0],
                port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                primary="master" in flags,
                myself="myself" in flags,
                slots=frozenset(slots),
                migrating=migrating,
                importing=importing,
            )
        )
    return found


@dataclass(frozen=True)
class SlotMove:
    """One slot to move, from one primary to another (node ids)."""

    slot: int
    source: str
    target: str


def even_moves(owned: Mapping[str, Collection[int]], receivers: Sequence[str]) -> list[SlotMove]:
    """Return the moves that leave each of ``receivers`` an even share of the slots and every
    other primary in ``owned`` none; a donor gives its lowest slots first, as redis-cli's
    rebalance does."""
    # The remainder goes to the receivers that hold most already: fewer slots move.
    order = sorted(receivers, key=lambda node: (-len(owned.get(node, ())), node))
    share, remainder = divmod(TOTAL_SLOTS, len(order))
    quota = {node: share + (1 if rank < remainder else 0) for rank, node in enumerate(order)}
    spare: list[tuple[int, str]] = []
    for donor, slots in owned.items():
        extra = len(slots) - quota.get(donor, 0)
        if extra > 0:
            spare += [(slot, donor) for slot in sorted(slots)[:extra]]
    given = iter(sorted(spare))
    moves: list[SlotMove] = []
    for node in order:
        for _ in range(quota[node] - len(owned.get(node, ()))):
            slot, donor = next(given)
            moves.append(SlotMove(slot, donor, node))
    return moves


@dataclass(frozen=True)
class Resized:
    """What ``add_shard`` or ``remove_shard`` did."""

    ports: tuple[int, ...]
    slots_moved: int
    seconds: float


class LocalCluster:
    """A Redis Cluster of ``spec.shards`` primaries with replicas, on loopback, and the shards
    added to it since."""

    def __init__(self, spec: ClusterSpec, *, container_image: str | None = None) -> None:
        self.spec = spec
        self._image = container_image
        self._binary = ""
        if container_image is None:
            binary = shutil.which(spec.redis_server)
            if binary is None:
                raise RedisServerNotFound(INSTALL_HINT)
            self._binary = binary
        ports = (
            [spec.base_port + i for i in range(spec.size)]
            if spec.base_port is not None
            else free_cluster_ports(spec.host, spec.size)
        )
        # Every node object made, by port: one per node, which keeps its process handle.
        self._made: dict[int, Node] = {}
        # The configured nodes first (primaries, then replicas), then those of added shards.
        self.nodes: list[Node] = [self._node_at(port) for port in ports]
        self._configured = len(self.nodes)
        self.added: list[AddedShard] = []
        self.reload()
        self._supervisor: threading.Thread | None = None
        self._stop_supervising = threading.Event()

    def _node_at(self, port: int) -> Node:
        node = self._made.get(port)
        if node is None:
            if self._image is not None:
                node = ContainerNode(self.spec, port, self._image)
            else:
                node = ProcessNode(self.spec, port, self._binary)
            self._made[port] = node
        return node

    def reload(self) -> None:
        """Read which shards were added or removed since (by ``python -m app cluster`` too)."""
        # The same objects for the same shards: a caller may hold one across a reload.
        held = {shard.ports: shard for shard in self.added}
        self.added = []
        for shard in read_added_shards(self.spec.data_dir):
            same = held.get(shard.ports)
            if same is not None:
                same.state = shard.state
            self.added.append(same or shard)
        self.nodes[self._configured :] = [
            self._node_at(port) for port in self._serving_added_ports()
        ]
        # A node removed meanwhile (by another process) is forgotten once it has stopped; its
        # liveness check reaps it, should it be a child of this process.
        listed = {node.port for node in self.nodes} | {
            port for shard in self.added for port in shard.ports
        }
        for port, node in list(self._made.items()):
            if port not in listed and not node.alive():
                del self._made[port]

    def _serving_added_ports(self) -> list[int]:
        return [port for shard in self.added if shard.state in SERVING for port in shard.ports]

    @property
    def shard_count(self) -> int:
        """Return how many shards the cluster has (the configured ones and those added)."""
        return self.spec.shards + sum(1 for shard in self.added if shard.state in SERVING)

    @property
    def url(self) -> str:
        scheme = "rediss" if self.spec.tls is not None else "redis"
        return f"{scheme}://{self.spec.host}:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def exists(self) -> bool:
        """Return whether the nodes' data is there (the cluster was started here before)."""
        return (self.spec.data_dir / f"node-{self.nodes[0].port}" / "nodes.conf").exists()

    def running(self) -> bool:
        """Return whether a node of the cluster answers (another process may run it)."""
        for node in self.nodes:
            try:
                with single_node(self.spec.host, node.port, self.spec.tls) as client:
                    client.ping()
            except redis.BusyLoadingError:
                return True
            except redis.RedisError:
                continue
            return True
        return False

    def start(self, timeout: float = 60.0) -> None:
        """Start or adopt every node, form the cluster if it is new, and wait until ready.

        What an interrupted resize left is settled too: a shard that had not joined yet, or had
        given its slots away, is removed.
        """
        self.reload()
        for node in self.nodes:
            node.start()
        self._wait_pingable(self.nodes, timeout)
        if self.spec.acl_file is not None:
            self.load_acl()
        formed = [self._is_formed(node.port) for node in self.nodes]
        if not any(formed):
            self._create()
        elif not all(formed):
            fresh = [n.port for n, ok in zip(self.nodes, formed, strict=True) if not ok]
            raise LocalClusterError(
                f"nodes on ports {fresh} under {self.spec.data_dir} lost their cluster state "
                "while the others kept it: stop the service and remove that directory to start "
                "a new, empty cluster"
            )
        if any(shard.state not in SERVING for shard in self.added):
            try:
                with self._resizing():
                    self._settle(timeout)
            except ResizeRunning:
                logger.warning("a resize of the cluster is running: not settling its shards")
        self.wait_ready(timeout)

    def load_acl(self) -> None:
        """Give every node the users of ``spec.acl_file`` as it is now.

        A node started here has loaded it already; a node adopted from an earlier start may hold
        an older file's users (ACL LOAD reads it again) or run without one (its users are set
        one by one, and the file is loaded at its next start).
        """
        assert self.spec.acl_file is not None
        path = self.spec.acl_file
        users = [line.split() for line in path.read_text().splitlines() if line.strip()]
        for node in self.nodes:
            with single_node(self.spec.host, node.port, self.spec.tls) as client:
                try:
                    command(client, "ACL", "LOAD")
                except redis.ResponseError as exc:
                    if "not configured to use an ACL file" not in str(exc):
                        raise LocalClusterError(
                            f"redis node on port {node.port} refused the ACL file {path}: {exc}"
                        ) from exc
                    for words in users:
                        command(client, "ACL", "SETUSER", *words[1:])

    def stop(self) -> None:
        """Shut every node down (the append-only files are already synced), those of shards
        another process added included."""
        self.stop_supervising()
        try:
            self.reload()
        except LocalClusterError:
            logger.exception("could not read the added shards: stopping the known nodes")
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            if not node.wait_stopped(STOP_GRACE_S):
                node.kill()

    def supervise(self) -> None:
        """Restart crashed nodes in a background thread until ``stop`` is called."""
        self._stop_supervising.clear()
        self._supervisor = threading.Thread(
            target=self._supervise_loop, name="redis-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None

    def _supervise_loop(self) -> None:
        while not self._stop_supervising.wait(SUPERVISE_INTERVAL_S):
            try:
                self.reload()
            except LocalClusterError:
                logger.exception("could not read the added shards: supervising the known nodes")
            for node in list(self.nodes):
                if node.alive() or (isinstance(node, ProcessNode) and node.adopt()):
                    continue
                # Read again after seeing it dead: a shard being removed (python -m app cluster
                # remove-shard) leaves the list before its nodes are stopped.
                with contextlib.suppress(LocalClusterError):
                    self.reload()
                if node not in self.nodes:
                    continue
                logger.warning("redis node on port %d died: restarting it", node.port)
                try:
                    node.start()
                except LocalClusterError:
                    logger.exception("could not restart redis node port=%d", node.port)

    def kill_node(self, index: int) -> None:
        """Kill a node with SIGKILL, as a crash would (for tests)."""
        self.nodes[index].kill()

    def restart_node(self, index: int, timeout: float = 60.0) -> None:
        """Start a killed node again and wait until the cluster is whole (for tests)."""
        self.nodes[index].start()
        self._wait_pingable(self.nodes, timeout)
        self.wait_ready(timeout)

    def primary_ports(self) -> list[int]:
        """Return the ports of the nodes that are primaries now."""
        with single_node(self.spec.host, self._any_alive_port(), self.spec.tls) as client:
            shards = command(client, "CLUSTER", "SLOTS")
        return sorted({int(entry[2][1]) for entry in shards})

    def flushall(self) -> None:
        """Empty every primary (replicas follow)."""
        for port in self.primary_ports():
            with single_node(self.spec.host, port, self.spec.tls) as client:
                client.flushall()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every node agrees the cluster is whole and every replica is in sync."""
        deadline = time.monotonic() + timeout
        problem = "not checked yet"
        while time.monotonic() < deadline:
            problem = self._readiness_problem()
            if problem == "":
                return
            time.sleep(READY_POLL_S)
        raise LocalClusterError(f"local Redis Cluster not ready after {timeout:.0f}s: {problem}")

    def _readiness_problem(self) -> str:
        masters = 0
        layouts: set[frozenset[tuple[int, bool, frozenset[int]]]] = set()
        for node in self.nodes:
            try:
                with single_node(self.spec.host, node.port, self.spec.tls) as client:
                    info = cluster_info(client)
                    if info.get("cluster_state") != "ok":
                        return f"node {node.port} cluster_state={info.get('cluster_state')}"
                    if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                        return f"node {node.port} knows {info.get('cluster_known_nodes')} nodes"
                    if int(info.get("cluster_slots_ok", 0)) != TOTAL_SLOTS:
                        return f"node {node.port} sees {info.get('cluster_slots_ok')} slots ok"
                    # What a client learns the topology from: a replica in sync can still be
                    # missing from it for a moment, and a client that starts then never sees it.
                    for entry in command(client, "CLUSTER", "SLOTS"):
                        if len(entry) - 3 != self.spec.replicas_per_shard:
                            return f"node {node.port} lists slots {entry[0]}- without all replicas"
                    # After a resize: every node sees the same primaries, serving the same slots
                    # (a shard without slots yet is in no CLUSTER SLOTS entry).
                    views = parse_cluster_nodes(command(client, "CLUSTER", "NODES"))
                    primaries = sum(1 for view in views if view.primary)
                    if primaries != self.shard_count:
                        return f"node {node.port} sees {primaries} primaries"
                    layouts.add(frozenset((v.port, v.primary, v.slots) for v in views))
                    replication = client.info("replication")
                    if replication["role"] == "master":
                        masters += 1
                    elif replication.get("master_link_status") != "up":
                        return f"replica {node.port} link to its primary is down"
            except redis.RedisError as exc:
                return f"node {node.port}: {exc}"
        if masters != self.shard_count:
            return f"{masters} primaries instead of {self.shard_count}"
        if len(layouts) > 1:
            return "the nodes do not agree yet on which primary serves which slots"
        return ""

    def _shards(self) -> list[list[Node]]:
        """Return each shard's nodes, the one it was created with as primary first."""
        configured = self.nodes[: self._configured]
        shards = [[node] for node in configured[: self.spec.shards]]
        for offset, node in enumerate(configured[self.spec.shards :]):
            shards[offset % self.spec.shards].append(node)
        by_port = {node.port: node for node in self.nodes}
        shards += [
            [by_port[port] for port in shard.ports]
            for shard in self.added
            if shard.state in SERVING
        ]
        return shards

    def _create(self) -> None:
        spec = self.spec
        shards = self._shards()
        per_shard = TOTAL_SLOTS // len(shards)
        ids: list[str] = []
        for index, shard in enumerate(shards):
            first = index * per_shard
            last = TOTAL_SLOTS - 1 if index == len(shards) - 1 else first + per_shard - 1
            with single_node(spec.host, shard[0].port, spec.tls) as client:
                command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
                command(client, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                ids.append(command(client, "CLUSTER", "MYID"))
        self._meet(self.nodes[1:], len(self.nodes))
        for shard, primary in zip(shards, ids, strict=True):
            for node in shard[1:]:
                with single_node(spec.host, node.port, spec.tls) as client:
                    command(client, "CLUSTER", "REPLICATE", primary)

    def _meet(self, nodes: Sequence[Node], size: int) -> None:
        """Introduce ``nodes`` to the first node; wait until all ``size`` nodes know each other."""
        for node in nodes:
            with single_node(self.spec.host, node.port, self.spec.tls) as client:
                command(client, "CLUSTER", "MEET", self.spec.host, self.nodes[0].port)
        everyone = {node.port: node for node in [*self.nodes, *nodes]}.values()
        self._wait(
            lambda: all(self._known_nodes(n.port) == size for n in everyone), "nodes to meet"
        )

    def _wait(self, condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(READY_POLL_S)
        raise LocalClusterError(f"timed out waiting for {what}")

    def _known_nodes(self, port: int) -> int:
        with single_node(self.spec.host, port, self.spec.tls) as client:
            return int(cluster_info(client).get("cluster_known_nodes", 0))

    def _is_formed(self, port: int) -> bool:
        with single_node(self.spec.host, port, self.spec.tls) as client:
            info = cluster_info(client)
        return int(info.get("cluster_known_nodes", 0)) > 1

    def _wait_pingable(self, nodes: Sequence[Node], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                try:
                    with single_node(self.spec.host, node.port, self.spec.tls) as client:
                        # A node still loading its append-only file answers LOADING.
                        client.ping()
                    break
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError as exc:
                    if not node.alive():
                        output = node.failure_output() if isinstance(node, ProcessNode) else ""
                        raise LocalClusterError(
                            f"redis node on port {node.port} exited at start: {output or exc}"
                        ) from exc
                if time.monotonic() > deadline:
                    raise LocalClusterError(f"redis node on port {node.port} does not answer")
                time.sleep(READY_POLL_S)

    def _any_alive_port(self) -> int:
        for node in self.nodes:
            if node.alive():
                return node.port
        raise LocalClusterError("no node of the local cluster is running")

    # Resizing: the cluster must be running (``start``, or another process's).

    def add_shard(self, *, slots: Collection[int] | None = None, timeout: float = 60.0) -> Resized:
        """Add a primary with ``spec.replicas_per_shard`` replicas and move slots to it.

        The slots moved are ``slots`` (tests choose them), else an even share taken from the
        other primaries. The cluster serves all along. A run that was interrupted while slots
        moved is resumed rather than adding another shard.
        """
        began = time.monotonic()
        with self._resizing():
            self._settle(timeout)
            with _Admin(self.spec) as admin:
                self._close_open_slots(admin)
                last = self.added[-1] if self.added else None
                if last is not None and last.state is ShardState.DRAINING:
                    raise LocalClusterError(
                        f"the shard on ports {_ports(last.ports)} was being removed: run "
                        "remove-shard to finish that first"
                    )
                if last is None or last.state is not ShardState.REBALANCING:
                    self._ready_or_raise()
                    last = self._join(admin, timeout)
                views = self._views(admin)
                target = self._primary_of(views, last)
                if slots is None:
                    owned = {view.id: view.slots for view in views if view.primary}
                    receivers = [view.id for view in views if view.primary]
                    moves = even_moves(owned, receivers)
                else:
                    owner = {slot: view.id for view in views for slot in view.slots}
                    moves = [
                        SlotMove(slot, owner[slot], target.id)
                        for slot in sorted(slots)
                        if owner[slot] != target.id
                    ]
                self._move(admin, moves, views)
                self._set_state(last, ShardState.READY)
            self.wait_ready(timeout)
        return Resized(last.ports, len(moves), time.monotonic() - began)

    def remove_shard(self, *, timeout: float = 60.0) -> Resized:
        """Move the slots of the shard added last to the other primaries, evenly, then remove
        its nodes from the cluster (CLUSTER FORGET on every other node) and stop them."""
        began = time.monotonic()
        with self._resizing():
            self._settle(timeout)
            if not self.added:
                raise NothingToRemove(
                    f"nothing to remove: the cluster in {self.spec.data_dir} has only the "
                    f"{self.spec.shards} shards it was created with"
                )
            shard = self.added[-1]
            with _Admin(self.spec) as admin:
                self._close_open_slots(admin)
                views = self._views(admin)
                leaving = self._primary_of(views, shard)
                # Left on, a primary that loses its last slot becomes a replica of the node
                # that took it, and takes its own replicas along.
                for port in shard.ports:
                    admin(port, "CONFIG", "SET", "cluster-allow-replica-migration", "no")
                self._set_state(shard, ShardState.DRAINING)
                owned = {view.id: view.slots for view in views if view.primary}
                receivers = [view.id for view in views if view.primary and view.id != leaving.id]
                moves = even_moves(owned, receivers)
                self._move(admin, moves, views)
                self._set_state(shard, ShardState.LEAVING)
                self._discard(admin, shard)
            self.wait_ready(timeout)
        return Resized(shard.ports, len(moves), time.monotonic() - began)

    @contextlib.contextmanager
    def _resizing(self) -> Iterator[None]:
        """Hold the data directory's resize lock; raise ResizeRunning if another process does."""
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.spec.data_dir / RESIZE_LOCK_FILE).open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ResizeRunning(
                    f"another add-shard or remove-shard is running on {self.spec.data_dir}"
                ) from None
            self.reload()
            yield

    def _ready_or_raise(self) -> None:
        problem = self._readiness_problem()
        if problem:
            raise LocalClusterError(f"the cluster is not ready to resize: {problem}")

    def _set_state(self, shard: AddedShard, state: ShardState) -> None:
        shard.state = state
        write_added_shards(self.spec.data_dir, self.added)
        self.reload()

    def _settle(self, timeout: float) -> None:
        """Remove what an interrupted resize left: a shard that had not joined, or had no slots
        left and was being forgotten."""
        pending = [shard for shard in self.added if shard.state not in SERVING]
        if not pending:
            return
        with _Admin(self.spec) as admin:
            for shard in reversed(pending):
                logger.warning(
                    "removing the shard on ports %s left by an interrupted resize (%s)",
                    _ports(shard.ports),
                    shard.state.value,
                )
                self._discard(admin, shard)
        self.wait_ready(timeout)

    def _join(self, admin: _Admin, timeout: float) -> AddedShard:
        """Start a new shard's nodes on the next free ports and make them part of the cluster."""
        ports = self._next_ports(1 + self.spec.replicas_per_shard)
        shard = AddedShard(tuple(ports), ShardState.JOINING)
        self.added.append(shard)
        write_added_shards(self.spec.data_dir, self.added)
        try:
            nodes = [self._node_at(port) for port in ports]
            for node in nodes:
                node.start()
            self._wait_pingable(nodes, timeout)
            self._meet(nodes, len(self.nodes) + len(nodes))
            primary = admin(ports[0], "CLUSTER", "MYID")
            for port in ports[1:]:
                admin(port, "CLUSTER", "REPLICATE", primary)
            self._set_state(shard, ShardState.REBALANCING)
            self.wait_ready(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self._discard(admin, shard)
            raise
        logger.info("shard on ports %s joined the cluster", _ports(ports))
        return shard

    def _next_ports(self, count: int) -> list[int]:
        if self.spec.base_port is None:
            return free_cluster_ports(self.spec.host, count)
        taken = {port for shard in self.added for port in shard.ports} | set(self.ports)
        ports: list[int] = []
        candidate = max(taken)
        while len(ports) < count:
            candidate += 1
            if candidate + 10000 > 65535:
                raise LocalClusterError("no free ports left above the cluster's for a new shard")
            if port_free(self.spec.host, candidate) and port_free(
                self.spec.host, candidate + 10000
            ):
                ports.append(candidate)
        return ports

    def _views(self, admin: _Admin) -> list[NodeView]:
        """Return the cluster's nodes as the first node sees them."""
        return parse_cluster_nodes(admin(self.nodes[0].port, "CLUSTER", "NODES"))

    @staticmethod
    def _primary_of(views: Sequence[NodeView], shard: AddedShard) -> NodeView:
        for view in views:
            if view.primary and view.port in shard.ports:
                return view
        raise LocalClusterError(f"the shard on ports {_ports(shard.ports)} has no primary")

    def _move(self, admin: _Admin, moves: Sequence[SlotMove], views: Sequence[NodeView]) -> None:
        """Move slots in batches per source and target: each step of a batch is one pipeline
        per node, and a slot stays open (ASK, TRYAGAIN) only while its batch moves."""
        by_id = {view.id: view for view in views}
        primaries = [view.port for view in views if view.primary]
        by_pair: dict[tuple[str, str], list[int]] = {}
        for wanted in moves:
            by_pair.setdefault((wanted.source, wanted.target), []).append(wanted.slot)
        batches = [
            (by_id[source], by_id[target], slots[first : first + MOVE_BATCH])
            for (source, target), slots in by_pair.items()
            for first in range(0, len(slots), MOVE_BATCH)
        ]

        def move_batch(source: NodeView, target: NodeView, batch: list[int]) -> int:
            admin.each(target.port, batch, "CLUSTER", "SETSLOT", "{}", "IMPORTING", source.id)
            admin.each(source.port, batch, "CLUSTER", "SETSLOT", "{}", "MIGRATING", target.id)
            self._finish_moves(admin, batch, source.port, target, primaries)
            return len(batch)

        # Valkey (8 and later) answers each SETSLOT once the node's replicas have it: batches on
        # connections of their own wait for those acknowledgements side by side.
        done = 0
        with ThreadPoolExecutor(MOVERS, thread_name_prefix="slot-mover") as movers:
            for moved in movers.map(lambda batch: move_batch(*batch), batches):
                if (done + moved) // PROGRESS_EVERY > done // PROGRESS_EVERY:
                    logger.info("moved %d of %d slots", done + moved, len(moves))
                done += moved

    def _finish_moves(
        self,
        admin: _Admin,
        slots: Sequence[int],
        source: int,
        target: NodeView,
        primaries: Sequence[int],
    ) -> None:
        """Move what is left of open slots' keys to ``target`` and give it the slots."""
        left = list(slots)
        while left:
            found: list[list[str]] = admin.each(
                source, left, "CLUSTER", "GETKEYSINSLOT", "{}", MIGRATE_BATCH
            )
            left = [slot for slot, keys in zip(left, found, strict=True) if keys]
            for slot, keys in zip(left, (keys for keys in found if keys), strict=True):
                try:
                    admin(
                        source, "MIGRATE", self.spec.host, target.port, "", 0,
                        MIGRATE_TIMEOUT_MS, "KEYS", *keys,
                    )  # fmt: skip
                except redis.ResponseError as exc:
                    raise LocalClusterError(
                        f"moving the keys of slot {slot} from port {source} to port "
                        f"{target.port} failed: {exc} (run the command again to finish it)"
                    ) from exc
        # The new owner first, so that it serves the slots before the others redirect to it.
        others = [port for port in primaries if port not in (target.port, source)]
        for port in [target.port, source, *others]:
            admin.each(port, slots, "CLUSTER", "SETSLOT", "{}", "NODE", target.id)

    def _close_open_slots(self, admin: _Admin) -> None:
        """Finish the slot moves an interrupted resize left open, as ``redis-cli --cluster fix``
        does."""
        views = self._views(admin)
        by_id = {view.id: view for view in views}
        primaries = [view.port for view in views if view.primary]
        for port in primaries:
            own = next(v for v in parse_cluster_nodes(admin(port, "CLUSTER", "NODES")) if v.myself)
            for slot, target in own.migrating.items():
                logger.warning("finishing the move of slot %d left open", slot)
                try:
                    admin(by_id[target].port, "CLUSTER", "SETSLOT", slot, "IMPORTING", own.id)
                except redis.ResponseError as exc:
                    # Interrupted after the target took the slot: it only has to be told around.
                    if "already the owner" not in str(exc):
                        raise
                self._finish_moves(admin, [slot], port, by_id[target], primaries)
            for slot, source in own.importing.items():
                # Without a MIGRATING side nothing was redirected here: nothing to take over.
                source_view = by_id.get(source)
                if source_view is None or slot not in _own_view(admin, source_view).migrating:
                    admin(port, "CLUSTER", "SETSLOT", slot, "STABLE")

    def _discard(self, admin: _Admin, shard: AddedShard) -> None:
        """Forget a shard's nodes on every other node, stop them and delete their data."""
        leaving = set(shard.ports)
        ids = [view.id for view in self._views(admin) if view.port in leaving]
        for node in self.nodes:
            if node.port in leaving:
                continue
            for node_id in ids:
                try:
                    admin(node.port, "CLUSTER", "FORGET", node_id)
                except redis.ResponseError as exc:
                    if "Unknown node" not in str(exc):
                        raise
        # At once: a forgotten node still running would be met again after a minute.
        nodes = [self._node_at(port) for port in shard.ports]
        for node in nodes:
            node.terminate()
        for node in nodes:
            if not node.wait_stopped(STOP_GRACE_S):
                node.kill()
            if isinstance(node, ProcessNode):
                shutil.rmtree(node.directory, ignore_errors=True)
            del self._made[node.port]
        admin.forget(leaving)
        self.added.remove(shard)
        write_added_shards(self.spec.data_dir, self.added)
        self.reload()
        logger.info("shard on ports %s removed from the cluster", _ports(shard.ports))


class ResizeRunning(LocalClusterError):
    """Another process is adding or removing a shard of the same cluster."""


class _Admin:
    """Connections to the nodes for one resize: its many small commands reuse them."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        # One client per node, shared by the movers' threads: its pool gives each thread a
        # connection of its own.
        self._clients: dict[int, redis.Redis] = {}
        self._lock = threading.Lock()

    def __call__(self, port: int, *args: str | int) -> Any:
        return command(self._client(port), *args)

    def each(self, port: int, slots: Sequence[int], *template: str | int) -> list[Any]:
        """Send ``template`` once per slot (its ``"{}"`` replaced by the slot) as one pipeline;
        return the replies in order (the first error reply is raised)."""
        at = template.index("{}")
        pipe = self._client(port).pipeline(transaction=False)
        for slot in slots:
            pipe.execute_command(*template[:at], slot, *template[at + 1 :])  # type: ignore[no-untyped-call]
        return pipe.execute()

    def _client(self, port: int) -> redis.Redis:
        with self._lock:
            client = self._clients.get(port)
            if client is None:
                client = self._clients[port] = node_client(self.spec.host, port, self.spec.tls)
            return client

    def forget(self, ports: Collection[int]) -> None:
        for port in ports:
            with self._lock:
                client = self._clients.pop(port, None)
            if client is not None:
                client.close()

    def __enter__(self) -> _Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.forget(list(self._clients))


def _own_view(admin: _Admin, view: NodeView) -> NodeView:
    """Return a node's own line of CLUSTER NODES (the only one with its open slots)."""
    lines = parse_cluster_nodes(admin(view.port, "CLUSTER", "NODES"))
    return next(line for line in lines if line.myself)


def _ports(ports: Sequence[int]) -> str:
    return ", ".join(str(port) for port in ports)


@contextlib.contextmanager
def single_node(host: str, port: int, tls: TlsFiles | None = None) -> Iterator[redis.Redis]:
    """Yield a short-lived client of one node (administration only)."""
    client = node_client(host, port, tls)
    try:
        yield client
    finally:
        client.close()


def node_client(host: str, port: int, tls: TlsFiles | None = None) -> redis.Redis:
    """Return a client of one node (administration only): the caller closes it."""
    return redis.Redis(
        host=host,
        port=port,
        # A MIGRATE of a batch of keys may take up to its own timeout.
        socket_timeout=MIGRATE_TIMEOUT_MS / 1000 + 5,
        socket_connect_timeout=2,
        decode_responses=True,
        ssl=tls is not None,
        ssl_ca_certs=str(tls.ca) if tls is not None else None,
    )


def command(client: redis.Redis, *args: str | int) -> Any:
    """Send one command to a node (redis-py leaves execute_command untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """Return CLUSTER INFO as a dict of strings."""
    return parse_cluster_info(command(client, "CLUSTER", "INFO"))


def _terminate_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid exists (and is not a zombie we own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def port_free(host: str, port: int) -> bool:
    """Return whether a TCP port can be bound on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server does, so that a port in TIME_WAIT after a restart counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_ports(host: str, count: int) -> list[int]:
    """Pick ``count`` ports whose cluster bus ports (port + 10000) are free as well."""
    ports: list[int] = []
    candidate = 20000 + (os.getpid() * 7) % 20000
    while len(ports) < count:
        candidate += 1
        if candidate > 55000:
            candidate = 20000
        if port_free(host, candidate) and port_free(host, candidate + 10000):
            ports.append(candidate)
    return ports
