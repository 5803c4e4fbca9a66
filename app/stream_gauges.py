"""What an operator watches on a stream and its consumer groups, read at scrape time.

For each stream: its length; for each consumer group: its lag (entries not yet delivered to the
group), its pending entries (delivered, not acknowledged), the age of the oldest pending entry
(from its id, which is the time it was added) and its consumers. The profile event stream and
every topic report the same families (``mdb_stream_*``), labelled by the stream's key.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from app.redis import RedisStore

GROUP_LABELS = ["stream", "group"]


class StreamGauges:
    """Families of stream gauges, filled one stream at a time."""

    def __init__(self) -> None:
        self.length = GaugeMetricFamily(
            "mdb_stream_length", "Entries in the stream (XLEN).", labels=["stream"]
        )
        self.lag = GaugeMetricFamily(
            "mdb_stream_group_lag",
            "Entries of the stream not yet delivered to the consumer group.",
            labels=GROUP_LABELS,
        )
        self.pending = GaugeMetricFamily(
            "mdb_stream_group_pending",
            "Entries delivered to the group's consumers and not acknowledged yet.",
            labels=GROUP_LABELS,
        )
        self.oldest_pending_age = GaugeMetricFamily(
            "mdb_stream_group_oldest_pending_age_seconds",
            "Age of the group's oldest pending entry, from its id (0 when none is pending).",
            labels=GROUP_LABELS,
        )
        self.consumers = GaugeMetricFamily(
            "mdb_stream_group_consumers",
            "Consumers the group knows (XINFO GROUPS).",
            labels=GROUP_LABELS,
        )

    async def read(self, store: RedisStore, stream: str, label: str | None = None) -> bool:
        """Read ``stream`` and its groups and add their samples (labelled ``label`` or the key).

        Return whether the stream exists: one that does not yet (its producers or consumers
        create it) adds no sample, and is not asked for groups (XINFO would fail on it).
        """
        name = label or stream
        found, length = await asyncio.gather(
            store.call(stream, "EXISTS", stream, what="metrics: stream exists"),
            store.call(stream, "XLEN", stream, what="metrics: stream length"),
        )
        if not found:
            return False
        groups = await store.call(stream, "XINFO", "GROUPS", stream, what="metrics: groups")
        self.length.add_metric([name], float(length))
        oldest = await asyncio.gather(
            *(
                store.call(
                    stream, "XPENDING", stream, _field(g, "name"), what="metrics: pending entries"
                )
                for g in groups
            )
        )
        now_ms = time.time() * 1000
        for group, summary in zip(groups, oldest, strict=True):
            labels = [name, str(_field(group, "name"))]
            lag = _field(group, "lag")
            # Redis 7 answers nil when it cannot tell (entries deleted in the group's range):
            # then every entry after the last delivered one is the best bound it has.
            self.lag.add_metric(labels, float(lag) if lag is not None else float(length))
            self.pending.add_metric(labels, float(_field(group, "pending") or 0))
            self.consumers.add_metric(labels, float(_field(group, "consumers") or 0))
            self.oldest_pending_age.add_metric(labels, _oldest_age_s(summary, now_ms))
        return True

    def families(self) -> list[Metric]:
        """Return the families filled so far."""
        return [self.length, self.lag, self.pending, self.oldest_pending_age, self.consumers]


def _field(group: Any, name: str) -> Any:
    """Return a field of one XINFO GROUPS entry (a dict, or a flat list on some clients)."""
    if isinstance(group, dict):
        return group.get(name)
    pairs = dict(zip(group[::2], group[1::2], strict=True))
    return pairs.get(name)


def _oldest_age_s(summary: Any, now_ms: float) -> float:
    """Return the age of the oldest entry an XPENDING summary names (0 when none)."""
    if isinstance(summary, dict):
        count, lowest = summary.get("pending", 0), summary.get("min")
    else:
        count, lowest = summary[0], summary[1]
    if not count or not lowest:
        return 0.0
    created_ms = int(str(lowest).split("-", 1)[0])
    return max(0.0, (now_ms - created_ms) / 1000)
