"""Start, adopt, supervise and stop a local Redis Cluster on loopback.

One implementation serves the embedded default of ``python -m app serve`` (fixed ports, data kept
under the project so a restart reuses it) and the test suite (free ports, a temporary directory).
Every node runs with ``appendonly yes`` and ``appendfsync always``: a write the server has
acknowledged is on disk before the reply leaves, so it survives a restart of everything.

Nodes are ``redis-server`` processes by default. Where a Docker engine is reachable, the same
cluster can run as containers (``ContainerNode``, host networking so the addresses the cluster
advertises are the loopback addresses the client dials); creation, readiness and fault injection
are shared.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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

INSTALL_HINT = (
    "redis-server was not found on PATH: install it (Debian/Ubuntu: "
    "`apt-get install -y redis-server`, macOS: `brew install redis`) "
    "or set REDIS_URL to use an existing Redis or Redis Cluster"
)


class LocalClusterError(RuntimeError):
    """The local cluster could not be started or did not become ready."""


class RedisServerNotFound(LocalClusterError):
    """The ``redis-server`` binary is missing."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only cluster: nodes, replication and the cluster bus all use TLS."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ClusterSpec:
    """Shape and placement of a local cluster."""

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
        adopted = self._running_pid()
        if adopted is not None:
            logger.info("adopting redis node port=%d pid=%d", self.port, adopted)
            self._pid = adopted
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


class LocalCluster:
    """A Redis Cluster of ``spec.shards`` primaries with replicas, on loopback."""

    def __init__(self, spec: ClusterSpec, *, container_image: str | None = None) -> None:
        self.spec = spec
        ports = (
            [spec.base_port + i for i in range(spec.size)]
            if spec.base_port is not None
            else free_cluster_ports(spec.host, spec.size)
        )
        self.nodes: list[Node]
        if container_image is not None:
            self.nodes = [ContainerNode(spec, port, container_image) for port in ports]
        else:
            binary = shutil.which(spec.redis_server)
            if binary is None:
                raise RedisServerNotFound(INSTALL_HINT)
            self.nodes = [ProcessNode(spec, port, binary) for port in ports]
        self._supervisor: threading.Thread | None = None
        self._stop_supervising = threading.Event()

    @property
    def url(self) -> str:
        scheme = "rediss" if self.spec.tls is not None else "redis"
        return f"{scheme}://{self.spec.host}:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        """Start or adopt every node, form the cluster if it is new, and wait until ready."""
        for node in self.nodes:
            node.start()
        self._wait_pingable(timeout)
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
        """Shut every node down (the append-only files are already synced)."""
        self.stop_supervising()
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
            for node in self.nodes:
                if not node.alive():
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
        self._wait_pingable(timeout)
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
        for node in self.nodes:
            try:
                with single_node(self.spec.host, node.port, self.spec.tls) as client:
                    info = cluster_info(client)
                    if info.get("cluster_state") != "ok":
                        return f"node {node.port} cluster_state={info.get('cluster_state')}"
                    if int(info.get("cluster_known_nodes", 0)) != self.spec.size:
                        return f"node {node.port} knows {info.get('cluster_known_nodes')} nodes"
                    if int(info.get("cluster_slots_ok", 0)) != TOTAL_SLOTS:
                        return f"node {node.port} sees {info.get('cluster_slots_ok')} slots ok"
                    # What a client learns the topology from: a replica in sync can still be
                    # missing from it for a moment, and a client that starts then never sees it.
                    for entry in command(client, "CLUSTER", "SLOTS"):
                        if len(entry) - 3 != self.spec.replicas_per_shard:
                            return f"node {node.port} lists slots {entry[0]}- without all replicas"
                    replication = client.info("replication")
                    if replication["role"] == "master":
                        masters += 1
                    elif replication.get("master_link_status") != "up":
                        return f"replica {node.port} link to its primary is down"
            except redis.RedisError as exc:
                return f"node {node.port}: {exc}"
        if masters != self.spec.shards:
            return f"{masters} primaries instead of {self.spec.shards}"
        return ""

    def _create(self) -> None:
        spec = self.spec
        primaries = self.nodes[: spec.shards]
        per_shard = TOTAL_SLOTS // spec.shards
        ids: list[str] = []
        for index, node in enumerate(primaries):
            first = index * per_shard
            last = TOTAL_SLOTS - 1 if index == spec.shards - 1 else first + per_shard - 1
            with single_node(spec.host, node.port, spec.tls) as client:
                command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
                command(client, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                ids.append(command(client, "CLUSTER", "MYID"))
        for node in self.nodes[1:]:
            with single_node(spec.host, node.port, spec.tls) as client:
                command(client, "CLUSTER", "MEET", spec.host, self.nodes[0].port)
        self._wait(
            lambda: all(self._known_nodes(n.port) == spec.size for n in self.nodes),
            "nodes to meet",
        )
        for offset, node in enumerate(self.nodes[spec.shards :]):
            with single_node(spec.host, node.port, spec.tls) as client:
                command(client, "CLUSTER", "REPLICATE", ids[offset % spec.shards])

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

    def _wait_pingable(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
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


@contextlib.contextmanager
def single_node(host: str, port: int, tls: TlsFiles | None = None) -> Iterator[redis.Redis]:
    """Yield a short-lived client of one node (administration only)."""
    client = redis.Redis(
        host=host,
        port=port,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
        ssl=tls is not None,
        ssl_ca_certs=str(tls.ca) if tls is not None else None,
    )
    try:
        yield client
    finally:
        client.close()


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
