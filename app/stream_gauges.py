"""What an operator watches on a stream and its consumer groups, read at scrape time.

For each stream: its length; for each consumer group: its lag (entries not yet delivered to the
group), its pending entries (delivered, not acknowledged), the age of the oldest pending entry
(from its id, which is the time it was added) and its consumers. The profile event stream and
every topic report the same families (``mdb_stream_*``), labelled by the stream's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from app.metrics import OTHER

if TYPE_CHECKING:
    from app.redis import RedisStore

GROUP_LABELS = ["stream", "group"]


class Held(NamedTuple):
    """What a group holds by its own records rather than the stream's pending list (a topic's
    groups read with NOACK): how many entries, and when the oldest was added (ms)."""

    entries: int
    oldest_ms: float | None


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

    async def read(
        self,
        store: RedisStore,
        stream: str,
        label: str | None = None,
        *,
        max_groups: int | None = None,
        held: Mapping[str, Held] | None = None,
    ) -> bool:
        """Read ``stream`` and its groups and add their samples (labelled ``label`` or the key).

        Return whether the stream exists: one that does not yet (its producers or consumers
        create it) adds no sample, and is not asked for groups (XINFO would fail on it). With
        ``max_groups``, only that many groups (the furthest behind) have series of their own
        and are asked for their oldest pending entry; the others are summed under the group
        ``_other``, so a stream with thousands of groups costs no more. ``held`` gives, per
        group, what it holds besides (or instead of) its pending list: it counts as pending.
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
        held = held or {}
        counted = [_group_counts(group, length, held) for group in groups]
        counted.sort(key=lambda group: (-(group[1] + group[2]), group[0]))
        keep = len(counted) if max_groups is None else max_groups
        own, others = counted[:keep], counted[keep:]
        oldest = await asyncio.gather(
            *(
                store.call(stream, "XPENDING", stream, group, what="metrics: pending entries")
                for group, *_counts in own
            )
        )
        now_ms = time.time() * 1000
        for (group, lag, pending, consumers), summary in zip(own, oldest, strict=True):
            labels = [name, group]
            self.lag.add_metric(labels, lag)
            self.pending.add_metric(labels, pending)
            self.consumers.add_metric(labels, consumers)
            age = _oldest_age_s(summary, now_ms)
            if group in held:
                age = max(age, _age_s(held[group].oldest_ms, now_ms))
            self.oldest_pending_age.add_metric(labels, age)
        if others:
            labels = [name, OTHER]
            self.lag.add_metric(labels, sum(group[1] for group in others))
            self.pending.add_metric(labels, sum(group[2] for group in others))
            self.consumers.add_metric(labels, sum(group[3] for group in others))
        return True

    def families(self) -> list[Metric]:
        """Return the families filled so far."""
        return [self.length, self.lag, self.pending, self.oldest_pending_age, self.consumers]


def _group_counts(
    group: Any, length: float, held: Mapping[str, Held]
) -> tuple[str, float, float, float]:
    """Return a group's name, lag, pending entries and consumers from XINFO GROUPS (and what it
    holds by its own records: those include its pending entries)."""
    lag = _field(group, "lag")
    name = str(_field(group, "name"))
    pending = float(_field(group, "pending") or 0)
    if name in held:
        pending = float(held[name].entries)
    return (
        name,
        # Redis 7 answers nil when it cannot tell (entries deleted in the group's range): then
        # every entry of the stream is the bound it has.
        float(lag) if lag is not None else float(length),
        pending,
        float(_field(group, "consumers") or 0),
    )


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
    return _age_s(int(str(lowest).split("-", 1)[0]), now_ms)


def _age_s(created_ms: float | None, now_ms: float) -> float:
    """Return how old an entry added at ``created_ms`` is (0 for none)."""
    if created_ms is None:
        return 0.0
    return max(0.0, (now_ms - created_ms) / 1000)
