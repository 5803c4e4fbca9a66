"""What queues and topics share: what they use of the broker, their script's common arguments
and settling outcomes, publishing, long polling.

A queue or topic handle gets a ``ChannelContext`` (the store, the messaging settings and the
process's wake-ups), not the broker that made it, so the broker imports its channels and no
channel imports the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypeVar

from app.config import MessagingSettings
from app.errors import AppError
from app.messaging import keys
from app.messaging.exceptions import MessageNotFound, WrongReceipt
from app.messaging.metrics import ChannelCounters
from app.messaging.schemas import EntryResult, Published, from_ms
from app.records.ids import new_ulid
from app.redis import RedisStore
from app.schemas import trusted
from app.scripting import (
    LuaScript,
    OutcomeErrors,
    Reply,
    ScriptContractError,
    as_fixed,
    as_int,
    as_list,
    as_str,
    outcome_of,
    raise_for,
)

# The Lua both channel scripts begin with (a script runs as one text: LuaScript.load joins them).
CHANNEL_LUA = Path(__file__).with_name("channel.lua")
# Messages per publish step: bounds one script's run time and argument list.
PUBLISH_BATCH = 500
# At most this many items (messages, places, pairs) in a merged step: small steps gain from
# going together; callers of big ones each go alone, so the server runs one caller's step while
# this process reads another's answer (merging batches of 100 measured slower).
MERGED_ITEMS = 100

E = TypeVar("E", bound=IntEnum)
# A queue's or a topic's delivery.
D = TypeVar("D")
# The domain error a failing step outcome means, made from the channel's name and the step's
# subject (the group a topic step names, the kind a queue already has).
ChannelErrors: TypeAlias = "OutcomeErrors[E, [str, str]]"


class Settlement(IntEnum):
    """What an ack, nack or extend did to one message (``queue.lua`` and ``topic.lua`` alike)."""

    DONE = 1
    # The step already ran with this receipt (a re-send, or a client's retry): nothing changed.
    REPEATED = 0
    NOT_FOUND = -1
    WRONG_RECEIPT = -2


SETTLE_ERRORS: OutcomeErrors[Settlement, [str]] = {
    Settlement.NOT_FOUND: MessageNotFound,
    Settlement.WRONG_RECEIPT: WrongReceipt,
}


def settle_results(ids: Sequence[str], outcomes: Sequence[Settlement]) -> list[EntryResult]:
    """Return each settled message's result, as its own request would have answered it."""
    results = []
    for message_id, outcome in zip(ids, outcomes, strict=True):
        make = SETTLE_ERRORS.get(outcome)
        results.append(
            EntryResult(status=204, id=message_id)
            if make is None
            else failed(message_id, make(message_id))
        )
    return results


def failed(message_id: str | None, error: AppError) -> EntryResult:
    """Return the result of an entry that failed with ``error``."""
    return EntryResult(status=error.status_code, id=message_id, message=error.message)


async def settle_each(
    ids: Sequence[str], settle: Callable[[int], Awaitable[object]]
) -> list[EntryResult]:
    """Settle entries one call each, concurrently (the calls share pipelines); a message's own
    failure (no such message, a wrong receipt) is its entry's result, the channel's (no such
    queue, topic or group) the request's."""

    async def one(index: int) -> EntryResult:
        try:
            await settle(index)
        except (MessageNotFound, WrongReceipt) as exc:
            return failed(ids[index], exc)
        return EntryResult(status=204, id=ids[index])

    return list(await asyncio.gather(*(one(index) for index in range(len(ids)))))


def published_result(published: Published) -> EntryResult:
    """Return a published message's result: 201 stored, 200 a duplicate."""
    return EntryResult(
        status=200 if published.duplicate else 201, id=published.id, duplicate=published.duplicate
    )


_SETTLEMENTS = {int(outcome): outcome for outcome in Settlement}


def settlements(reply: Reply) -> list[Settlement]:
    """Return the per-message outcomes a settling step answers."""
    statuses = as_list(reply)
    try:
        # The usual answer, read at the cost of a lookup per message.
        return [_SETTLEMENTS[status] for status in statuses]  # type: ignore[index]
    except (KeyError, TypeError):
        return [outcome_of(Settlement, status) for status in statuses]


def columns(reply: Reply, width: int) -> list[list[Reply]]:
    """Return a list answered as rows of ``width`` values in a row (a receive's deliveries) as
    its ``width`` columns: each read in one pass (``as_str_list``...), not value by value."""
    values = as_list(reply)
    if len(values) % width:
        raise ScriptContractError(f"expected rows of {width} values, got {len(values)} values")
    return [values[start::width] for start in range(width)]


def timestamps() -> Callable[[Reply], datetime]:
    """Return a reader of a step's server timestamps (ms) as datetimes that converts each value
    once: the deliveries of a receive share their lease end, and often their publish time."""
    seen: dict[Reply, datetime] = {}

    def read(reply: Reply) -> datetime:
        found = seen.get(reply)
        if found is None:
            found = seen[reply] = from_ms(as_int(reply))
        return found

    return read


def milliseconds(seconds: float) -> str:
    """Return a duration in seconds as the whole milliseconds the scripts take."""
    return str(round(seconds * 1000))


class Wakeups:
    """In-process wake-ups for long-polling receivers, one signal per queue or topic."""

    def __init__(self) -> None:
        self._signals: dict[str, asyncio.Event] = {}

    def notify(self, prefix: str) -> None:
        """Wake this process's receivers waiting on the queue or topic under ``prefix``."""
        signal = self._signals.pop(prefix, None)
        if signal is not None:
            signal.set()

    async def wait(self, prefix: str, timeout_s: float) -> None:
        """Wait until ``notify(prefix)`` or ``timeout_s``, whichever comes first."""
        signal = self._signals.setdefault(prefix, asyncio.Event())
        try:
            await asyncio.wait_for(signal.wait(), timeout_s)
        except TimeoutError:
            return


@dataclass(frozen=True)
class ChannelContext:
    """What queues and topics use of their broker: the store, the settings, the wake-ups, the
    label values of their counters and the steps waiting to be sent together."""

    store: RedisStore
    settings: MessagingSettings
    wakeups: Wakeups = field(default_factory=Wakeups)
    counters: ChannelCounters = field(default_factory=ChannelCounters)
    steps: Coalescer = field(default_factory=lambda: Coalescer())


T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    items: Sequence[T]
    send: Callable[[list[T]], Awaitable[list[R]]]
    answer: asyncio.Future[list[R]]


class Coalescer:
    """Steps of one kind on one channel made in the same event-loop turn (concurrent requests,
    a producer's or a consumer's tasks), sent as one step: a message published, received or
    acknowledged alone costs a step of its own, with its round trip and the script's fixed
    work, and eight concurrent ones cost about as much as one.

    A step is a list in, a list out: each caller gets the slice of the answer at its items'
    place (a receive's items are the places it asks for, and the deliveries fill them in order,
    so when there are fewer than asked the last callers get fewer or none). A merged step the
    channel refuses (an ``AppError``: a missing channel or group, a priority on a fifo queue;
    the scripts refuse before they write) is sent again per caller, so each gets the answer its
    own step would have had; any other failure is every caller's, as it would have been.
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[_Waiting[Any, Any]]] = {}

    async def run(
        self,
        key: Hashable,
        items: Sequence[T],
        send: Callable[[list[T]], Awaitable[list[R]]],
    ) -> list[R]:
        """Send ``items`` with the other callers' of ``key`` in this turn, by the first caller's
        ``send`` (callers of one key send alike); answer this caller's part."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting[T, R] = _Waiting(items=items, send=send, answer=loop.create_future())
        batch = self._waiting.get(key)
        if batch is None:
            batch = self._waiting[key] = [waiting]
            # Its first step runs after the callbacks ready now: the other callers of this
            # turn join the batch before it is sent.
            task = loop.create_task(self._send(key, batch))
            _background.add(task)
            task.add_done_callback(functools.partial(self._finished, key, batch))
        else:
            batch.append(waiting)
        # A caller that gives up (cancelled) cancels only its own answer: before its step is
        # sent it is left out of it; after, the step goes on for the others (``_settle``
        # passes over an answer that is done).
        return await waiting.answer

    async def _send(self, key: Hashable, given: list[_Waiting[Any, Any]]) -> None:
        self._close(key, given)  # later callers make the next batch
        batch = [waiting for waiting in given if not waiting.answer.done()]
        if not batch:
            return
        if len(batch) == 1:
            # Alone in its turn: through the automatic pipeline, with the turn's other steps
            # to its node (another consumer's ack, another channel's receive), which the
            # server then runs in one round and one fsync.
            await _alone(batch[0])
            return
        items = [item for waiting in batch for item in waiting.items]
        if len(items) > MERGED_ITEMS:
            # Each its own step, the steps in one write (the automatic pipeline's batch).
            await asyncio.gather(*(_alone(waiting) for waiting in batch))
            return
        try:
            with _at_once():
                answers = await batch[0].send(items)
        except AppError:
            await asyncio.gather(*(_alone(waiting) for waiting in batch))
            return
        except BaseException as exc:
            for waiting in batch:
                _settle(waiting.answer, exception=exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for waiting in batch:
            _settle(waiting.answer, result=answers[start : start + len(waiting.items)])
            start += len(waiting.items)

    def _close(self, key: Hashable, batch: list[_Waiting[Any, Any]]) -> None:
        if self._waiting.get(key) is batch:
            del self._waiting[key]

    def _finished(
        self, key: Hashable, batch: list[_Waiting[Any, Any]], task: asyncio.Task[None]
    ) -> None:
        _background.discard(task)
        # Cancelled (the loop closing) before it answered, or even started, or failed outside
        # the step's own error handling: no caller waits forever, nor joins a batch nobody
        # sends.
        self._close(key, batch)
        error = None if task.cancelled() else task.exception()
        for waiting in batch:
            _settle(waiting.answer, exception=error or asyncio.CancelledError())


# Whether the step being sent merges callers of its turn: then it is written at once, from its
# task, instead of waiting a turn in the automatic pipeline for others (``Channel.answer``).
# Set in the coalescer's task only; the steps it sends each alone, in tasks of their own, leave
# together in one write of the pipeline. (Tasks that redis-py starts during a step inherit it;
# only ``Channel.answer`` reads it.)
_STEP_AT_ONCE: ContextVar[bool] = ContextVar("step_at_once", default=False)


@contextlib.contextmanager
def _at_once() -> Iterator[None]:
    token = _STEP_AT_ONCE.set(True)
    try:
        yield
    finally:
        _STEP_AT_ONCE.reset(token)


async def _alone(waiting: _Waiting[Any, Any]) -> None:
    try:
        _settle(waiting.answer, result=await waiting.send(list(waiting.items)))
    except Exception as exc:
        _settle(waiting.answer, exception=exc)


# The coalescers' steps in flight (the event loop keeps only weak references to tasks).
_background: set[asyncio.Task[None]] = set()


def _settle(
    future: asyncio.Future[list[Any]],
    *,
    result: list[Any] | None = None,
    exception: BaseException | None = None,
) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result or [])


class Channel(Generic[E]):
    """A queue or a topic: every step is one run of its script on the channel's slot.

    A step answers its outcome (an ``E``) first, then its values.
    """

    def __init__(
        self,
        *,
        context: ChannelContext,
        name: str,
        prefix: str,
        registry: str,
        script_keys: list[str],
        script: LuaScript,
        outcomes: type[E],
        errors: ChannelErrors[E],
    ) -> None:
        self.context = context
        self.name = name
        self.prefix = prefix
        self.slot = keys.slot_of(prefix)
        self._registry = registry
        self._script = script
        self._keys = script_keys
        self._outcomes = outcomes
        self._errors = errors
        self._head = [name, str(context.settings.trace_retention_s)]

    def marker(self, kind: str, value: str) -> str:
        """Return the key of one of the channel's markers (see ``keys.marker``)."""
        return keys.marker(self.prefix, kind, value)

    @property
    def sweep_limit(self) -> str:
        """How many finished traces past their retention a publish or ack step removes."""
        return str(self.context.settings.housekeeping_batch)

    async def answer(
        self, step: str, *args: str, extra_keys: Sequence[str] = (), what: str
    ) -> tuple[E, list[Reply]]:
        """Run one step of the channel's script (declaring ``extra_keys`` after the channel's
        own: a group's, a step's markers); return its outcome and the values after it."""
        reply = as_list(
            await self._script(
                self.context.store,
                keys=[*self._keys, *extra_keys],
                args=[step, *self._head, *args],
                what=what,
                now=_STEP_AT_ONCE.get(),
            )
        )
        if not reply:
            raise ScriptContractError(f"{what}: the script answered no outcome")
        return outcome_of(self._outcomes, reply[0]), reply[1:]

    async def register(self) -> None:
        """Add the channel to its kind's registry, where the metrics find it (idempotent).

        The registry is in another slot than the channel's keys, so this is a step of its own
        after a successful create; every create call runs it again, so a channel whose
        registration was lost (or that was created before the registry existed) is registered
        by its next create call.
        """
        now_ms = str(round(time.time() * 1000))
        await self.context.store.call(
            self._registry, "ZADD", self._registry, "NX", now_ms, self.name, what="register"
        )

    def check(self, outcome: E, *, subject: str = "") -> E:
        """Raise the domain error ``outcome`` names; return a successful outcome."""
        return raise_for(outcome, self._errors, self.name, subject)

    async def run(
        self,
        step: str,
        *args: str,
        extra_keys: Sequence[str] = (),
        subject: str = "",
        what: str,
    ) -> list[Reply]:
        """Run one step; raise the domain error its outcome names; return the values after it."""
        outcome, values = await self.answer(step, *args, extra_keys=extra_keys, what=what)
        self.check(outcome, subject=subject)
        return values

    async def publish_rows(self, rows: Sequence[list[str]], *, what: str) -> list[Published]:
        """Publish messages given as script arguments (``publish_now``), together with this
        process's other publishes to the channel in the same event-loop turn."""
        return await self.context.steps.run(
            (self.prefix, "publish"), rows, lambda merged: self.publish_now(merged, what=what)
        )

    async def publish_now(self, rows: Sequence[list[str]], *, what: str) -> list[Published]:
        """Publish messages given as script arguments, in batches: each row after its new id,
        its last item the dedupe id ('' for none), followed by the index (from 1) of its
        de-duplication marker among the keys the step declares ('0' for none)."""
        published: list[Published] = []
        window = str(self.context.settings.dedupe_window_s * 1000)
        first_marker = len(self._keys) + 1
        for start in range(0, len(rows), PUBLISH_BATCH):
            args = [window, self.sweep_limit]
            markers: list[str] = []
            for row in rows[start : start + PUBLISH_BATCH]:
                index = "0"
                if row[-1]:
                    index = str(first_marker + len(markers))
                    markers.append(self.marker("dedupe", row[-1]))
                args += [new_ulid(slot=self.slot), *row, index]
            (results,) = await self.run("publish", *args, extra_keys=markers, what=what)
            published += [_published(result) for result in as_list(results)]
        self.wake()
        return published

    def wake(self) -> None:
        """Wake this process's receivers waiting on the channel."""
        self.context.wakeups.notify(self.prefix)

    async def poll(self, receive_once: Callable[[], Awaitable[list[D]]], wait_s: float) -> list[D]:
        """Call ``receive_once`` until it leases something or ``wait_s`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        poll_s = self.context.settings.poll_interval_ms / 1000
        while True:
            delivered = await receive_once()
            remaining = deadline - loop.time()
            if delivered or remaining <= 0:
                return delivered
            await self.context.wakeups.wait(self.prefix, min(poll_s, remaining))


def _published(reply: Reply) -> Published:
    # The message's id (the first message's for a duplicate) and whether this call stored it.
    message_id, stored = as_fixed(reply, 2)
    return trusted(Published, {"id": as_str(message_id), "duplicate": not as_int(stored)})
