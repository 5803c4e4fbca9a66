"""Benchmark: read routes with and without replica reads (``redis.read_from_replicas``).

Run: ``python bench/replica_reads.py [--route customer] [--route profile] [--connections 64]
[--duration 10] [--processes 1] [--repeat 3] [--no-pin]`` (needs ``wrk``: ``apt-get install -y
wrk``). It starts a local 3-shard Redis Cluster (one replica a shard) on free loopback ports,
seeds 1,000 customers (through the service) and 1,000 profiles, serves the service twice the
way ``bench/profiles.py`` does (uvicorn, same processes and CPUs), once with replica reads off
and once on, loads each route on each with wrk, alternating, and prints requests per second,
p50, p99 and the share of the route's read scripts (EVALSHA_RO, from ``INFO commandstats``)
that replicas ran. ``--route`` picks the routes (default: the customer read). Only ever
targets 127.0.0.1.

On one machine the replicas share its CPUs with the primaries, the servers and wrk: the figure
shows what replica reads cost or save the service and where the reads land, not the read
capacity that replicas on machines of their own add.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.local_cluster import ClusterSpec, LocalCluster  # noqa: E402
from bench.profiles import (  # noqa: E402
    HOST,
    READ_SCRIPT,
    Result,
    free_port,
    load,
    median,
    pin_load_away_from_servers,
    seed_profiles,
    serve,
)

CUSTOMERS = 1000


def customer_script(ids: list[str]) -> str:
    """Return a wrk script that reads the customers ``ids`` at random."""
    return f"""
local ids = {{{", ".join(json.dumps(customer_id) for customer_id in ids)}}}
request = function()
  return wrk.format("GET", "/customers/" .. ids[math.random(1, #ids)])
end
"""


def seed_customers(base_url: str) -> list[str]:
    """Create the customers the customer reads ask for, through the service; return their ids."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for n in range(CUSTOMERS):
            body = {"name": f"Customer {n}", "balance": n, "vip": n % 7 == 0}
            response = http.post("/customers", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def script_calls(cluster: LocalCluster) -> tuple[int, int]:
    """Return the EVALSHA_RO calls on the primaries and on the replicas since the last reset."""
    on_primaries = on_replicas = 0
    for port in cluster.ports:
        with redis.Redis(host=HOST, port=port) as node:
            role = node.info("replication")["role"]
            stats = node.info("commandstats").get("cmdstat_evalsha_ro", {})
        count = int(stats.get("calls", 0))
        if role == "master":
            on_primaries += count
        else:
            on_replicas += count
    return on_primaries, on_replicas


def reset_stats(cluster: LocalCluster) -> None:
    for port in cluster.ports:
        with redis.Redis(host=HOST, port=port) as node:
            node.config_resetstat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--route",
        action="append",
        choices=["customer", "profile"],
        help="a route to load (repeat for several): GET /customers/{id}, GET /profile/{user}",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per target; medians shown")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve on CPUs of their own, away from Redis and wrk (as bench/profiles.py)",
    )
    args = parser.parse_args()
    routes: list[str] = args.route or ["customer"]
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    server_cpus = pin_load_away_from_servers(args.processes) if args.pin else None

    rows: list[tuple[str, str, Result, float]] = []
    with tempfile.TemporaryDirectory() as data:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data), die_with_parent=True))
        cluster.start()
        targets: dict[str, int] = {}
        servers = []
        try:
            for target, on in (("primaries", "false"), ("replicas", "true")):
                targets[target] = free_port(after=max(targets.values(), default=18000) + 1)
                env = {
                    **os.environ,
                    "REDIS_URL": cluster.url,
                    "APP_REDIS__READ_FROM_REPLICAS": on,
                }
                servers.append(
                    serve("app.main:app", targets[target], args.processes, env, server_cpus)
                )
            seed_profiles(cluster.url)
            ids = seed_customers(f"http://{HOST}:{targets['primaries']}")
            scripts = {
                "customer": ("GET /customers/{id}", customer_script(ids)),
                "profile": ("GET /profile/{user}", READ_SCRIPT),
            }
            for route in routes:
                name, script = scripts[route]
                runs: dict[str, list[Result]] = {target: [] for target in targets}
                calls = {target: [0, 0] for target in targets}
                # Alternate the targets, and which goes first, so that drift on a shared machine
                # hits them alike.
                for run in range(args.repeat):
                    order = list(targets.items())
                    for target, port in order if run % 2 == 0 else reversed(order):
                        url = f"http://{HOST}:{port}"
                        load(url, script, args.connections, 2)  # warm-up
                        reset_stats(cluster)
                        runs[target].append(load(url, script, args.connections, args.duration))
                        primaries, replicas = script_calls(cluster)
                        calls[target][0] += primaries
                        calls[target][1] += replicas
                for target, results in runs.items():
                    primaries, replicas = calls[target]
                    share = replicas / (primaries + replicas) if primaries + replicas else 0.0
                    rows.append((name, target, median(results), share))
        finally:
            for process in servers:
                process.terminate()
                process.wait(30)
            cluster.stop()

    print(
        f"\n{args.connections} connections, {args.duration}s each, "
        f"{args.processes} uvicorn process(es), {os.cpu_count()} CPUs, wrk -t1 on this machine, "
        f"servers {'pinned to CPUs ' + str(sorted(server_cpus)) if server_cpus else 'not pinned'}, "
        f"median of {args.repeat} alternating runs; 'reads on' = where the route's read scripts ran"
    )
    print(
        f"{'route':22} {'reads on':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'on replicas':>12}  errors"
    )
    for name, target, r, share in rows:
        print(
            f"{name:22} {target:10} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
            f"{share:12.0%}  {r.errors}"
        )
    for name in dict.fromkeys(name for name, _target, _r, _share in rows):
        rps = {target: r.rps for n, target, r, _share in rows if n == name}
        print(f"{name}: replicas / primaries throughput = {rps['replicas'] / rps['primaries']:.2f}")


if __name__ == "__main__":
    main()
