"""Process-level tuning applied once the app has started.

CPython's cyclic garbage collector runs a young-generation pass every 700 allocations and, now
and then, a full pass over every tracked object. A Redis Cluster client holds tens of thousands
of long-lived objects (the slot table alone maps 16384 slots), so those passes cost a large
share of each request (docs/benchmarks.md). Freezing moves everything alive after start-up out
of the collector's sight; the higher thresholds make passes rarer. Reference cycles are still
collected, just in larger, less frequent batches.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 50_000
MIDDLE_GENERATION_THRESHOLD = 50
OLD_GENERATION_THRESHOLD = 100


def tune_garbage_collector() -> None:
    """Freeze the objects built at start-up and make collector passes rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(
        YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD
    )
