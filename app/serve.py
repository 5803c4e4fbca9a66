"""``python -m app serve``: the embedded local cluster (when no REDIS_URL) and the HTTP processes.

With one process, uvicorn runs in this process. With ``--workers N``, this process binds the
socket once and supervises N children that share it, restarting one that dies. Each child gets a
slot index (APP_PROCESS_INDEX) that a restarted child keeps, so its stream consumers have stable
names and finish their own pending entries first (see workers.pool.consumer_prefix).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from urllib.parse import quote, urlsplit

import uvicorn

from app import acl
from app.config import Settings, load_settings
from app.local_cluster import (
    ClusterSpec,
    LocalCluster,
    LocalClusterError,
    NothingToRemove,
    Resized,
)
from app.logs import configure_logging
from app.metrics import MULTIPROCESS_ENV, prepare_multiprocess_dir, process_exited
from workers.pool import PROCESS_INDEX_ENV

logger = logging.getLogger(__name__)

APP_IMPORT = "app.main:app"
CHILD_POLL_S = 0.5
CHILD_STOP_GRACE_S = 5.0
# A child that exits sooner than this after starting failed at start-up (bad URL, port...);
# such restarts back off, and after a few in a row the service gives up.
CHILD_STABLE_S = 10.0
CHILD_MAX_QUICK_FAILURES = 4
CHILD_RESTART_BASE_S = 0.25
CHILD_RESTART_CAP_S = 10.0


class ChildrenFailing(RuntimeError):
    """The HTTP processes fail at start-up again and again."""


ORPHAN_CHECK_S = 1.0

# Beside the embedded cluster's data (embedded.acl): the services' passwords, generated once, and
# the ACL file every node loads (their SHA-256 hashes only).
ACL_PASSWORDS_FILE = "acl-passwords.json"
ACL_FILE = "users.acl"


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    log_level: str
    # PROMETHEUS_MULTIPROC_DIR as the operator gave it (None: a temporary directory).
    metrics_dir: str | None = None


def embedded_cluster(settings: Settings) -> LocalCluster:
    """Return the embedded cluster the configuration describes (not started)."""
    embedded = settings.embedded
    data_dir = embedded.resolved_data_dir()
    spec = ClusterSpec(
        data_dir=data_dir,
        host=embedded.host,
        base_port=embedded.base_port,
        shards=embedded.shards,
        replicas_per_shard=embedded.replicas_per_shard,
        redis_server=embedded.redis_server,
        acl_file=data_dir / ACL_FILE if embedded.acl else None,
    )
    return LocalCluster(spec)


def resize_embedded(settings: Settings, *, add: bool) -> Resized:
    """Add a shard to the embedded cluster, or remove the one added last, while the service
    runs on it or not (then its nodes are started for the move and stopped after)."""
    cluster = embedded_cluster(settings)
    if not cluster.exists():
        raise LocalClusterError(
            f"no embedded cluster in {cluster.spec.data_dir}: start it once with "
            "`python -m app serve`"
        )
    if not add and not cluster.added:
        raise NothingToRemove(
            f"nothing to remove: the embedded cluster has only its {cluster.spec.shards} "
            "configured shards (embedded.shards)"
        )
    # New nodes load the same users as the others (they start with the same ACL file).
    if cluster.spec.acl_file is not None:
        embedded_users(cluster)
    running = cluster.running()
    if running:
        # Only the new nodes' processes start here; the service's supervisor adopts them.
        cluster.reload()
    else:
        cluster.start(timeout=settings.embedded.start_timeout_s)
    try:
        if add:
            return cluster.add_shard(timeout=settings.embedded.start_timeout_s)
        return cluster.remove_shard(timeout=settings.embedded.start_timeout_s)
    finally:
        if not running:
            cluster.stop()


@contextmanager
def embedded_url(settings: Settings, service: str) -> Iterator[str]:
    """Yield the URL that connects ``service`` to the embedded cluster (as its own user with
    embedded.acl), starting the cluster for the block if it does not run (a tool's run)."""
    cluster = embedded_cluster(settings)
    if not cluster.exists():
        raise LocalClusterError(
            f"no embedded cluster in {cluster.spec.data_dir}: start it once with "
            "`python -m app serve`"
        )
    passwords = embedded_users(cluster) if cluster.spec.acl_file is not None else None
    running = cluster.running()
    if not running:
        cluster.start(timeout=settings.embedded.start_timeout_s)
    try:
        if passwords is None:
            yield cluster.url
        else:
            yield service_urls(settings, cluster.url, passwords)[
                f"APP_SERVICES__{service.upper()}__REDIS_URL"
            ]
    finally:
        if not running:
            cluster.stop()


def embedded_users(cluster: LocalCluster) -> dict[str, str]:
    """Write the embedded cluster's ACL file, a user per service, from the passwords kept beside
    its data (generated on first use); return the passwords (service -> password)."""
    assert cluster.spec.acl_file is not None
    try:
        passwords = acl.load_or_create_passwords(cluster.spec.data_dir / ACL_PASSWORDS_FILE)
    except acl.PasswordsFileError as exc:
        raise LocalClusterError(
            f"embedded.acl: {exc}: fix it, or remove it to give the users new passwords"
        ) from exc
    # Debian's redis-server has no JSON module: its commands are left out.
    acl.write_aclfile(cluster.spec.acl_file, passwords)
    return passwords


def service_urls(
    settings: Settings, cluster_url: str, passwords: Mapping[str, str]
) -> dict[str, str]:
    """Return the environment that connects each service without a Redis URL of its own to the
    cluster at ``cluster_url`` as its own user (APP_SERVICES__<NAME>__REDIS_URL)."""
    parts = urlsplit(cluster_url)
    found: dict[str, str] = {}
    for service, password in passwords.items():
        own = settings.services.get(service)
        if own is not None and own.redis_url:
            continue
        user = quote(acl.user_name(service), safe="")
        netloc = f"{user}:{quote(password, safe='')}@{parts.netloc}"
        found[f"APP_SERVICES__{service.upper()}__REDIS_URL"] = f"{parts.scheme}://{netloc}"
    return found


def serve(settings: Settings, options: ServeOptions) -> None:
    """Run the service until interrupted; start and stop the embedded cluster if needed."""
    # uvicorn re-raises the signal that stopped it once it has shut down; as SystemExit it
    # unwinds through the finally below, so the embedded cluster is stopped as well.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    cluster = None if settings.redis.url else embedded_cluster(settings)
    try:
        if cluster is not None:
            logger.info(
                "no REDIS_URL: starting the embedded Redis Cluster: dir=%s ports=%s",
                cluster.spec.data_dir,
                cluster.ports,
            )
            # Before the nodes start: they load it (and again whenever one restarts).
            passwords = embedded_users(cluster) if cluster.spec.acl_file is not None else None
            cluster.start(timeout=settings.embedded.start_timeout_s)
            cluster.supervise()
            # The HTTP processes load their settings themselves and find the cluster here.
            if passwords is None:
                os.environ["REDIS_URL"] = cluster.url
            else:
                # No REDIS_URL: no process of the service connects as the default user.
                os.environ.update(service_urls(settings, cluster.url, passwords))
                logger.info(
                    "embedded ACL users on: each service connects as <service>-svc; passwords "
                    "in %s",
                    cluster.spec.data_dir / ACL_PASSWORDS_FILE,
                )
        if options.workers == 1:
            os.environ[PROCESS_INDEX_ENV] = "0"
            uvicorn.Server(_uvicorn_config(options)).run()
        else:
            _serve_processes(options)
    finally:
        if cluster is not None:
            # A second Ctrl-C must not leave the nodes half stopped.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            logger.info("stopping the embedded Redis Cluster")
            cluster.stop()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _uvicorn_config(options: ServeOptions) -> uvicorn.Config:
    return uvicorn.Config(
        APP_IMPORT,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        # Not uvicorn's logging setup: its loggers go through the service's handler and format
        # (app.logs.configure_logging), and the service logs each request itself, with its id.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )


def _child(index: int, options: ServeOptions, sock: socket.socket, parent: int) -> None:
    # A spawned child starts with Python's default logging: give it the service's format.
    configure_logging(load_settings())
    os.environ[PROCESS_INDEX_ENV] = str(index)
    _stop_when_orphaned(parent)
    uvicorn.Server(_uvicorn_config(options)).run(sockets=[sock])


def _stop_when_orphaned(parent: int) -> None:
    """Shut this child down gracefully if the supervising process dies (even by SIGKILL).

    Otherwise a killed supervisor leaves children serving on the shared socket, and a restarted
    service would find its port taken.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        logger.warning("supervising process %d is gone: shutting down", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _metrics_dir(given: str | None) -> tuple[Path, bool]:
    """Point the children's metrics at a directory without a previous run's files
    (prometheus-client's multiprocess mode): the one given, else a temporary one. Return it
    and whether it is temporary."""
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="mdb-metrics-"))
    prepare_multiprocess_dir(path)
    os.environ[MULTIPROCESS_ENV] = str(path)
    return path, given is None


def _serve_processes(options: ServeOptions) -> None:
    metrics_dir, temporary = _metrics_dir(options.metrics_dir)
    sock = _uvicorn_config(options).bind_socket()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_child, args=(index, options, sock, os.getpid()), name=f"http-{index}"
        )
        process.start()
        return process

    gave_up = False
    children = {index: start(index) for index in range(options.workers)}
    started = dict.fromkeys(children, time.monotonic())
    quick_failures = dict.fromkeys(children, 0)
    restart_at: dict[int, float] = {}
    logger.info("serving with %d processes on %s:%d", options.workers, options.host, options.port)
    while not stopping.wait(CHILD_POLL_S):
        now = time.monotonic()
        for index, process in children.items():
            if process.is_alive() or index in restart_at:
                continue
            if process.pid is not None:
                process_exited(process.pid)
            lived = now - started[index]
            quick_failures[index] = quick_failures[index] + 1 if lived < CHILD_STABLE_S else 0
            if quick_failures[index] >= CHILD_MAX_QUICK_FAILURES:
                logger.error(
                    "http process %d failed %d times in a row right after starting: giving up",
                    index,
                    quick_failures[index],
                )
                gave_up = True
                stopping.set()
                break
            pause = min(CHILD_RESTART_CAP_S, CHILD_RESTART_BASE_S * 2 ** quick_failures[index])
            logger.warning(
                "http process %d exited (code %s): restarting in %.1fs",
                index,
                process.exitcode,
                pause,
            )
            restart_at[index] = now + pause
        for index, due in list(restart_at.items()):
            if now >= due and not stopping.is_set():
                del restart_at[index]
                children[index] = start(index)
                started[index] = now
    for process in children.values():
        process.terminate()
    for process in children.values():
        process.join(CHILD_STOP_GRACE_S + 15)
        if process.is_alive():
            process.kill()
            process.join()
    sock.close()
    if temporary:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if gave_up:
        raise ChildrenFailing("the HTTP processes keep failing at start-up; see the log above")
