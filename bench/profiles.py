"""Benchmark: profile read and create against the ceiling of a FastAPI route without Redis.

Run: ``python bench/profiles.py [--connections 64] [--duration 10] [--processes 1] [--repeat 3]
[--no-pin] [--baseline DIR] [--scrape S]`` (needs ``wrk``: ``apt-get install -y wrk``). It starts
a local 3-shard Redis Cluster on free loopback ports, serves the service and the ceiling app the
same way (uvicorn, same processes, no access log, the same CPUs: by default CPUs of their own,
with Redis and wrk on the others), loads each with wrk and prints requests per second, p50, p99 and
the ratio. ``--baseline DIR`` also serves the service from another checkout of this project
(``git worktree add DIR <commit>``), in the same run and the same way, to compare a change with
what it changes. ``--scrape S`` has a Prometheus-like scraper GET every target's ``/metrics``
every S seconds while it is loaded (a target without that route answers 404, which costs it
about as much as nothing). Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.local_cluster import ClusterSpec, LocalCluster, port_free  # noqa: E402

HOST = "127.0.0.1"
USERS = 1000

READ_SCRIPT = f"""
request = function()
  return wrk.format("GET", "/profile/user-" .. math.random(0, {USERS - 1}))
end
"""

CREATE_SCRIPT = """
local counter = 0
local prefix = tostring(os.time()) .. tostring(math.random(1, 1000000))
setup = function(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
request = function()
  counter = counter + 1
  local body = '{"email": "new@example.com", "username": "New"}'
  return wrk.format("POST", "/profile/new-" .. prefix .. "-" .. tid .. "-" .. counter,
    {["Content-Type"] = "application/json"}, body)
end
"""


def seed_profiles(url: str) -> None:
    """Store the profiles user-0 .. user-<USERS - 1> that the read loads ask for."""
    seed = redis.RedisCluster.from_url(url)
    for i in range(USERS):
        seed.hset(f"profile:user-{i}", mapping={"email": f"u{i}@example.com", "username": "U"})
    seed.close()


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str


def median(results: list[Result]) -> Result:
    """Return the per-figure median of several runs."""
    return Result(
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=", ".join(sorted({r.errors for r in results})),
    )


def free_port(after: int = 18000) -> int:
    for port in range(after, 19000):
        if port_free(HOST, port):
            return port
    raise RuntimeError("no free port")


def serve(
    app: str,
    port: int,
    processes: int,
    env: dict[str, str],
    cpus: set[int] | None = None,
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Serve ``app`` from the checkout ``root`` with uvicorn, on ``cpus`` only when given (its
    workers inherit them)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
         "--workers", str(processes), "--no-access-log", "--log-level", "warning"],
        cwd=root, env=env,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{port}/profile/user-1", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{app} did not start")


def to_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def load(url: str, script: str, connections: int, duration: int) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", file.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(file.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    problems = re.findall(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", out)
    if any(p.startswith("Non-2xx") for p in problems):
        # A fast error is not a fast service: the figures would mean nothing.
        raise RuntimeError(f"{url} answered errors under load: {'; '.join(problems)}")
    return Result(rps, p50, p99, "; ".join(problems) or "none")


@contextmanager
def scraping(url: str, every_s: float | None) -> Iterator[None]:
    """Scrape ``url``/metrics every ``every_s`` seconds in a thread while the block runs."""
    if every_s is None:
        yield
        return
    stop = threading.Event()

    def scrape() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.wait(every_s):
                http.get("/metrics")

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pin_load_away_from_servers(processes: int) -> set[int]:
    """Keep this process and what it starts (the Redis nodes, wrk) off the CPUs the servers
    get, and return those: one per uvicorn process.

    The load generator and the database then never take the served process's CPU, as in a
    deployment where Redis (MemoryDB, ElastiCache) and the clients run on other machines. Both
    targets get the same CPUs, but the ratio is not the one measured with ``--no-pin``: the
    Redis nodes' CPU no longer competes with the service, and wrk shares its CPU with them
    during the service's runs only.
    """
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("--pin needs Linux (os.sched_setaffinity): use --no-pin")
    available = sorted(os.sched_getaffinity(0))
    if len(available) <= processes:
        sys.exit(f"--pin needs more than {processes} CPUs, found {len(available)}: use --no-pin")
    os.sched_setaffinity(0, available[processes:])
    return set(available[:processes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per target; medians shown")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of this project, served as a third target to compare with",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve on CPUs of their own, away from Redis and wrk (Linux, needs more CPUs "
        "than --processes); --no-pin lets them all share every CPU",
    )
    parser.add_argument(
        "--scrape",
        type=float,
        metavar="S",
        help="GET each target's /metrics every S seconds during its load",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    server_cpus = pin_load_away_from_servers(args.processes) if args.pin else None

    with tempfile.TemporaryDirectory() as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        env = {**os.environ, "REDIS_URL": cluster.url}
        seed_profiles(cluster.url)
        service_port = free_port()
        ceiling_port = free_port(after=service_port + 1)
        targets = {"service": service_port, "ceiling": ceiling_port}
        servers = [serve("app.main:app", service_port, args.processes, env, server_cpus)]
        try:
            servers.append(
                serve("bench.ceiling:app", ceiling_port, args.processes, env, server_cpus)
            )
            if args.baseline is not None:
                targets["baseline"] = free_port(after=ceiling_port + 1)
                servers.append(
                    serve(
                        "app.main:app",
                        targets["baseline"],
                        args.processes,
                        env,
                        server_cpus,
                        root=args.baseline.resolve(),
                    )
                )
            rows: list[tuple[str, str, Result]] = []
            for name, script in (
                ("GET /profile/{user}", READ_SCRIPT),
                ("POST /profile/{user}", CREATE_SCRIPT),
            ):
                runs: dict[str, list[Result]] = {target: [] for target in targets}
                # Alternate the targets so that drift on a shared machine hits them alike.
                for _ in range(args.repeat):
                    for target, port in targets.items():
                        url = f"http://{HOST}:{port}"
                        load(url, script, args.connections, 2)  # warm-up
                        with scraping(url, args.scrape):
                            result = load(url, script, args.connections, args.duration)
                        runs[target].append(result)
                rows.extend((name, target, median(results)) for target, results in runs.items())
        finally:
            for process in servers:
                process.terminate()
                process.wait(30)
            cluster.stop()

    print(
        f"\n{args.connections} connections, {args.duration}s each, "
        f"{args.processes} uvicorn process(es), {os.cpu_count()} CPUs, wrk -t1 on this machine, "
        f"servers {'pinned to CPUs ' + str(sorted(server_cpus)) if server_cpus else 'not pinned'}, "
        f"median of {args.repeat} alternating runs"
        + (f", /metrics scraped every {args.scrape:g}s" if args.scrape else "")
    )
    print(f"{'route':22} {'target':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  errors")
    for name, target, r in rows:
        print(f"{name:22} {target:8} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f}  {r.errors}")
    for name in ("GET /profile/{user}", "POST /profile/{user}"):
        rps = {target: r.rps for n, target, r in rows if n == name}
        print(f"{name}: service / ceiling throughput = {rps['service'] / rps['ceiling']:.2f}")
        if "baseline" in rps:
            print(f"{name}: service / baseline throughput = {rps['service'] / rps['baseline']:.2f}")


if __name__ == "__main__":
    main()
