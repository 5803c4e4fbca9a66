"""Process-level tuning: the event loop a process runs on, and the garbage collector's
settings once the app has started.

The HTTP processes run on uvloop: uvicorn's ``loop="auto"`` picks it when it is installed
(``uvicorn[standard]`` installs it), and the workers that the lifespan starts share that loop.
``run`` gives the other long-running processes (``python -m workers``) the same loop, so a
worker consumes as fast alone as beside the API (docs/benchmarks.md).

CPython's cyclic garbage collector runs a young-generation pass every 700 allocations and, now
and then, a full pass over every tracked object. A Redis Cluster client holds tens of thousands
of long-lived objects (the slot table alone maps 16384 slots), so those passes cost a large
share of each request (docs/benchmarks.md). Freezing moves everything alive after start-up out
of the collector's sight; the higher thresholds make passes rarer. Reference cycles are still
collected, just in larger, less frequent batches.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

YOUNG_GENERATION_THRESHOLD = 50_000
MIDDLE_GENERATION_THRESHOLD = 50
OLD_GENERATION_THRESHOLD = 100

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop when it is installed, as uvicorn does, else on
    asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """Return the name of the running event loop's implementation (``uvloop``, ``asyncio``)."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def tune_garbage_collector() -> None:
    """Freeze the objects built at start-up and make collector passes rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(
        YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD
    )
