"""The service started the README's way (``python -m app serve``) in a subprocess, for tests
that kill and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.local_cluster import ClusterSpec, LocalCluster, port_free
from tests.conftest import PROJECT_ROOT

HOST = "127.0.0.1"
NODES = 6


# The engine runs (tests/engines/runs.py) go on beside the main session, in region 1: each
# session looks for free ports from a start of its own, far from the other's, so that neither
# takes a port the other has just found free, or is about to take back (a node restarted on
# its port). Every start is below Linux's ephemeral ports (32768 up), which a client connection
# may take between the check and the bind. Region 0: nodes from 10,000 (cluster bus from
# 20,000), other ports from 26,000; region 1: nodes from 13,000 (bus from 23,000), other ports
# from 28,500. A session uses a few dozen ports above its start.
PORT_REGION_ENV = "TEST_PORT_REGION"
_NODE_REGION_PORTS = 3000
_OTHER_REGION_PORTS = 2500


def _region() -> int:
    return int(os.environ.get(PORT_REGION_ENV, "0"))


def free_base_port(nodes: int = NODES) -> int:
    """Find ``nodes`` consecutive ports whose cluster bus ports are free too."""
    start = 10000 + _region() * _NODE_REGION_PORTS + os.getpid() % 2000
    for base in range(start, 55000 - nodes, nodes):
        ports = range(base, base + nodes)
        if all(port_free(HOST, p) and port_free(HOST, p + 10000) for p in ports):
            return base
    raise RuntimeError("no free ports")


def free_port() -> int:
    start = 26000 + _region() * _OTHER_REGION_PORTS + os.getpid() % 1000
    for port in range(start, 60000):
        if port_free(HOST, port):
            return port
    raise RuntimeError("no free port")


class Service:
    """The service started the README's way, in a subprocess: on its embedded cluster, or on
    the cluster at ``redis_url`` (the test session's) when one is given."""

    def __init__(self, data_dir: Path, *, redis_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.base_port = free_base_port()
        self.http_port = free_port()
        self.url = f"http://{HOST}:{self.http_port}"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key != "REDIS_URL" and not key.startswith("APP_")
        }
        self.env |= {
            "APP_EMBEDDED__BASE_PORT": str(self.base_port),
            "APP_EMBEDDED__DATA_DIR": str(data_dir),
            "APP_WORKERS__CLAIM_MIN_IDLE_MS": "2000",
            **env,
        }
        if redis_url is not None:
            self.env["REDIS_URL"] = redis_url
        self.output: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, output: Path | None = None) -> None:
        """Start the service; with ``output``, its stdout and stderr go to that file."""
        self.output = output
        sink = output.open("ab") if output is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.http_port), *extra],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=sink,
            stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
        )
        if output is not None:
            sink.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the service exited at start"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("service not ready in 60 s")

    def signal(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=60)

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.base_port}"

    def cluster(self) -> LocalCluster:
        return LocalCluster(ClusterSpec(data_dir=self.data_dir, base_port=self.base_port))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "redis")
    yield running
    clean_up(running)


def clean_up(running: Service) -> None:
    """Kill the service if it still runs, and stop the nodes it left (they outlive a kill -9 of
    the service): adopted, then stopped."""
    if running.process is not None and running.process.poll() is None:
        running.signal(signal.SIGKILL)
    if any(not port_free(HOST, running.base_port + i) for i in range(NODES)):
        leftover = running.cluster()
        leftover.start()
        leftover.stop()
