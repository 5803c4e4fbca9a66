"""The messaging layout: from the first one (a hash per queue message, a list per trace) to the
current one, and the check that refuses to serve data of an earlier one.

Layouts (``messaging:layout``): none, the first; ``2``, every key a script touches declared
(see keys.py); ``3``, topic groups read with NOACK and hold their entries by their own records
(topic.lua); ``4``, a receive call's leases kept together (one member of a queue's in-flight
set or a topic group's lease-ends and held sets per call, with a calls hash: queue.lua and
topic.lua, ``leave_call``; a queue's in-flight count in its config hash).
This version reads data of layouts 2 and 3 as it is, but a process of those versions must not
run beside it: a layout-2 process's trimming reads only the stream's pending list, so it would
drop entries that a group of this version holds, and a layout-3 process takes a call's member
of the in-flight or lease-ends set for a message id and drops it, so those leases would never
end. So a database of layout 2 or 3 is refused too, until the operator has stopped the older
processes and run the migration, which then moves nothing and only marks the layout.

``python -m app messaging migrate`` moves every old message hash and trace list into its queue's
or slot's hashes, each in one atomic step, and then records the layout. Run it with every
process of the older version stopped (an older process would go on writing the old layout);
it is safe to run again, or after an interruption.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import StartupRefused
from app.messaging import keys
from app.redis import RedisStore
from app.scripting import LuaScript, as_int

logger = logging.getLogger(__name__)

MIGRATE = LuaScript.load(Path(__file__).with_name("migrate.lua"))

# What the data in Redis is laid out as; absent in the first layout.
LAYOUT_KEY = "messaging:layout"
LAYOUT = "4"

OLD_MESSAGE = re.compile(r"^\{queue:(?P<queue>[^{}]+)\}:msg:(?P<id>.+)$")
OLD_TRACE = re.compile(r"^(?P<tag>\{[^{}]*\}):trace:(?P<id>.+)$")


class OldLayout(StartupRefused):
    """The messaging data was written by a version with an earlier layout: migrate it first."""

    def __init__(self) -> None:
        super().__init__(
            "the messaging data in Redis has the layout of an older version: stop every process "
            "of that version and run `python -m app messaging migrate` (docs/deployment.md)"
        )


@dataclass
class Migrated:
    """What a migration moved."""

    messages: int = 0
    traces: int = 0


async def check_layout(store: RedisStore) -> None:
    """Refuse to serve messaging data of an earlier layout (raise OldLayout).

    A database with no queue or topic registered is new: it is marked as the current layout.
    One with channels and no mark was written by the first version; one marked with an earlier
    layout, by a version that may still be running.
    """
    layout = await store.call(LAYOUT_KEY, "GET", LAYOUT_KEY, what="messaging layout")
    if layout == LAYOUT:
        return
    if layout is not None:
        raise OldLayout
    channels = 0
    for registry in (keys.QUEUE_REGISTRY, keys.TOPIC_REGISTRY):
        channels += as_int(await store.call(registry, "ZCARD", registry, what="messaging layout"))
    if channels:
        raise OldLayout
    await store.call(LAYOUT_KEY, "SET", LAYOUT_KEY, LAYOUT, "NX", what="messaging layout")


async def migrate_layout(store: RedisStore) -> Migrated:
    """Move every message hash and trace list of the first layout; mark the current layout."""
    done = Migrated()
    async for key in _scan(store, "{queue:*}:msg:*"):
        found = OLD_MESSAGE.match(key)
        if found is None:
            continue
        prefix = keys.queue_prefix(found["queue"])
        script_keys = [key, prefix + "bodies", prefix + "meta"]
        moved = await MIGRATE(
            store, keys=script_keys, args=["message", found["id"]], what="migrate"
        )
        done.messages += as_int(moved)
    async for key in _scan(store, "{*}:trace:*"):
        found = OLD_TRACE.match(key)
        if found is None:
            continue
        tag = found["tag"]
        script_keys = [key, tag + ":traces", tag + ":trace-expiry"]
        moved = await MIGRATE(store, keys=script_keys, args=["trace", found["id"]], what="migrate")
        done.traces += as_int(moved)
    await store.call(LAYOUT_KEY, "SET", LAYOUT_KEY, LAYOUT, what="messaging layout")
    logger.info("messaging layout migrated: messages=%d traces=%d", done.messages, done.traces)
    return done


async def _scan(store: RedisStore, pattern: str) -> AsyncIterator[str]:
    """Yield every key matching ``pattern`` (on every primary of a cluster)."""
    async for key in store.client.scan_iter(match=pattern, count=1000):
        yield str(key)
