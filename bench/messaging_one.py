"""One message per call through the Python API: this checkout against another one, in turns.

Run: ``python bench/messaging_one.py --baseline DIR [--pairs 6] [--seconds 5]``, where DIR is
another checkout of the project (``git worktree add /tmp/issue19base 58964f7``: the code issue
19 was filed against). Each run is a process of its own, on a fresh local 3-shard cluster
(``appendfsync always``, on free loopback ports), that runs the one-message-per-call rows of
its checkout's own ``bench/messaging.py`` (8 tasks publish one message per call for half of
``--seconds``, then receive one and acknowledge it per call until the backlog is drained), for
a fifo queue and a topic. The runs alternate (which side goes first alternates too), and the
medians of each side are compared: this machine's speed drifts by a fifth or more between
runs, and only turns taken in the same stretch of it say anything. This checkout's runs go as
the service's processes do (uvloop, the collector tuned: ``app/runtime.py``), unless
``--as-library``; the baseline's as its own bench ran them. Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("fifo published", "fifo consumed", "topic published", "topic consumed")
CHILD_TIMEOUT_S = 300


def child(args: argparse.Namespace) -> None:
    """Run the one-message-per-call rows of the checkout at ``args.root``; print them as JSON."""
    sys.path.insert(0, str(args.root))
    import app
    from app.config import RedisSettings
    from app.local_cluster import ClusterSpec, LocalCluster
    from app.redis import open_store
    from bench.messaging import Bench, free_base_port

    for module in (app, sys.modules["bench.messaging"]):
        if not Path(str(module.__file__)).resolve().is_relative_to(args.root.resolve()):
            raise SystemExit(f"imported {module.__file__}, not the checkout at {args.root}")
    runtime: ModuleType | None = None
    if args.service_runtime:  # (app.runtime is this checkout's: the baseline may lack it)
        runtime = importlib.import_module("app.runtime")
    bench_args = argparse.Namespace(
        seconds=args.seconds,
        rounds=1,
        batch=1,
        tasks=8,
        body_bytes=100,
        appendfsync="always",
    )

    async def rows() -> dict[str, Any]:
        async with open_store(RedisSettings(max_connections=64), cluster.url) as store:
            try:  # the layout mark the service writes at start (a checkout may not have it)
                from app.messaging.migrate import check_layout
            except ImportError:
                pass
            else:
                await check_layout(store)
            if runtime is not None:
                runtime.tune_garbage_collector()
            bench: Any = Bench(store, bench_args)  # this checkout's, or the baseline's
            figures: list[float] = []
            # Before issue 19 a case took its row's label and recorded the row itself.
            records = "label" in inspect.signature(bench.queue).parameters
            last = "one" if records else args.seconds / 2
            for kind in ("fifo", "topic"):
                case = bench.queue("fifo", 1, last) if kind == "fifo" else bench.topic(1, last)
                result = await case
                figures += bench.rows[-1][2:] if records else result
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
            return {"figures": figures, "loop": loop}

    with tempfile.TemporaryDirectory(prefix="bench-one-") as data_dir:
        cluster = LocalCluster(ClusterSpec(data_dir=Path(data_dir), base_port=free_base_port()))
        cluster.start()
        try:
            answer = (asyncio.run if runtime is None else runtime.run)(rows())
        finally:
            cluster.stop()
    print(json.dumps(answer))


def run_side(root: Path, seconds: float, *, service_runtime: bool) -> dict[str, Any]:
    """Run one side's rows in a process of its own; answer its figures and its event loop."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--root", str(root),
        "--seconds", str(seconds),
    ]  # fmt: skip
    if service_runtime:
        command.append("--service-runtime")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if result.returncode != 0:
        raise SystemExit(f"the run of {root} failed:\n{result.stdout}\n{result.stderr}")
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of the project")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--as-library",
        action="store_true",
        help="run this checkout on asyncio's loop with Python's collector settings",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--service-runtime", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.baseline is None:
        parser.error("--baseline DIR is required")
    sides = {"baseline": (args.baseline.resolve(), False), "this": (ROOT, not args.as_library)}
    figures: dict[str, list[list[float]]] = {name: [] for name in sides}
    loop = "uvloop" if importlib.util.find_spec("uvloop") and not args.as_library else "asyncio"
    runtime = f"{loop}, collector {'default' if args.as_library else 'tuned'}"
    print(
        f"messages/s, one per call, 8 tasks, bodies of 100 bytes, appendfsync always; "
        f"baseline {args.baseline}, this checkout ({runtime}); {args.pairs} alternating pairs"
    )
    print(f"  {'pair':<5} {'side':<9}" + "".join(f"{column:>17}" for column in COLUMNS))
    for pair in range(args.pairs):
        # Which side goes first alternates, so that neither always runs on a warmer machine.
        for name in ("baseline", "this") if pair % 2 == 0 else ("this", "baseline"):
            root, service_runtime = sides[name]
            answer = run_side(root, args.seconds, service_runtime=service_runtime)
            if name == "this" and answer["loop"] != loop:
                raise SystemExit(f"this checkout ran on {answer['loop']}, not {loop}")
            row = answer["figures"]
            figures[name].append(row)
            print(f"  {pair + 1:<5} {name:<9}" + "".join(f"{x:>17,.0f}" for x in row), flush=True)
    medians = {
        name: [statistics.median(row[i] for row in rows) for i in range(len(COLUMNS))]
        for name, rows in figures.items()
    }
    for name, row in medians.items():
        print(f"  {'median':<5} {name:<9}" + "".join(f"{x:>17,.0f}" for x in row))
    ratios = [this / base for this, base in zip(medians["this"], medians["baseline"], strict=True)]
    print(f"  {'this / baseline':<15}" + "".join(f"{x:>17.2f}" for x in ratios))


if __name__ == "__main__":
    main()
