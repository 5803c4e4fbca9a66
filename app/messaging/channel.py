"""What queues and topics share: their script's common arguments, publishing, long polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from app.messaging import keys
from app.messaging.schemas import Delivery, Published
from app.records.ids import new_ulid
from app.scripting import LuaScript

if TYPE_CHECKING:
    from app.messaging.broker import Broker

# Messages per publish step: bounds one script's run time and argument list.
PUBLISH_BATCH = 500
NOT_FOUND = -1


def milliseconds(seconds: float) -> str:
    """Return a duration in seconds as the whole milliseconds the scripts take."""
    return str(round(seconds * 1000))


class Channel:
    """A queue or a topic: every step is one run of ``script`` on the channel's slot."""

    script: ClassVar[LuaScript]

    def __init__(self, *, broker: Broker, name: str, prefix: str, script_keys: list[str]) -> None:
        self.broker = broker
        self.name = name
        self.prefix = prefix
        self.slot = keys.slot_of(prefix)
        self._keys = script_keys
        self._head = [
            name,
            keys.trace_prefix(self.slot),
            str(broker.settings.trace_retention_s),
            prefix,
        ]

    def check(self, reply: list[Any], args: tuple[str, ...]) -> None:
        """Raise the domain error a script's status names."""
        raise NotImplementedError

    async def run(self, step: str, *args: str, what: str) -> list[Any]:
        """Run one step of the channel's script; raise what its status names."""
        reply: list[Any] = await self.script(
            self.broker.store, keys=self._keys, args=[step, *self._head, *args], what=what
        )
        self.check(reply, args)
        return reply

    async def publish_rows(self, rows: Sequence[list[str]], *, what: str) -> list[Published]:
        """Publish messages given as script arguments (after each one's new id), in batches."""
        published: list[Published] = []
        window = str(self.broker.settings.dedupe_window_s * 1000)
        for start in range(0, len(rows), PUBLISH_BATCH):
            args = [window]
            for row in rows[start : start + PUBLISH_BATCH]:
                args += [new_ulid(slot=self.slot), *row]
            _, results = await self.run("publish", *args, what=what)
            published += [
                Published(id=message_id, duplicate=not new) for message_id, new in results
            ]
        self.broker.notify(self.prefix)
        return published

    async def poll(
        self, receive_once: Callable[[], Awaitable[list[Delivery]]], wait_s: float
    ) -> list[Delivery]:
        """Call ``receive_once`` until it leases something or ``wait_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        poll_s = self.broker.settings.poll_interval_ms / 1000
        while True:
            delivered = await receive_once()
            remaining = deadline - loop.time()
            if delivered or remaining <= 0:
                return delivered
            await self.broker.wait(self.prefix, min(poll_s, remaining))
