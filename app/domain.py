"""What a domain declares about itself, and what the composition root hands every domain.

Each domain package (``app/profiles``, ``app/messaging``...) exposes one ``Domain`` in its
``__init__.py``: its routers and middleware, the background workers it owns, the keys it reads
and writes, the Redis commands it needs, and its hooks. ``app.main.DOMAINS`` lists them all;
nothing else does. Later concerns ask every domain the same questions through this one type:
per-service ACL users (``keys`` and ``commands``), metrics (``gauges``), trimming
(``retention``), a service split (``routers`` and workers per process).

Workers are declared as specs, not built: the reusable runtime in ``workers/`` turns a
``ConsumerSpec`` into a consumer-group loop and a ``QueueWorkerSpec`` into a queue-worker loop,
so a domain never imports ``workers`` and ``workers`` never imports a domain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from fastapi import APIRouter
from prometheus_client.metrics_core import Metric
from starlette.middleware import Middleware

from app.config import Settings
from app.errors import NotFound
from app.redis import RedisStore
from app.streams import StreamWriter

T = TypeVar("T")

# One delivered stream entry: its id and its fields (none for an entry deleted since delivery).
StreamEntry = tuple[str, dict[str, str]]
# Applies these entries and acknowledges them atomically (an entry without fields is only
# acknowledged); returns how many it acknowledged.
# Applies a batch of one stream's entries (the stream's name, the entries); returns how many
# it acknowledged.
BatchHandler = Callable[[RedisStore, str, list[StreamEntry]], Awaitable[int]]
# Periodic upkeep of one stream (its retention), run by one consumer per stream and process.
Housekeeping = Callable[[RedisStore, str, Settings], Awaitable[object]]

# What every service's ACL user needs besides its domains' own commands: the cluster client's
# topology and command table (COMMAND, and COMMAND GETKEYS on its general path), whether the
# server is a cluster (without INFO and CLUSTER INFO it takes a cluster for a single node), its
# health checks, and ASK redirections during slot migration.
CLIENT_COMMANDS = (
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|info",
    "+info",
    "+command",
    "+ping",
    "+asking",
    # Replica reads (redis.read_from_replicas): every connection says READONLY when it opens.
    "+readonly",
)

# How a domain uses the keys matching a pattern: read only, write only, or both (the ACL
# selectors ``%R~``, ``%W~`` and ``~``).
Access = Literal["read", "write", "read-write"]


@dataclass(frozen=True)
class Context:
    """The resources the lifespan owns, as every domain hook and worker factory sees them.

    ``services`` holds the objects one domain offers others by design (the messaging broker,
    for the media example's queue); ``need`` finds one by its type, so this module names none
    of them.
    """

    settings: Settings
    store: RedisStore
    streams: StreamWriter
    services: Mapping[type[Any], object] = field(default_factory=dict)
    # The domains this process runs (the metrics ask each one for its gauges).
    domains: Sequence[Domain] = ()
    # The contexts of the running services that connect with their own Redis URL (their own
    # cluster, or their own ACL user): ``of`` hands each domain its own.
    scoped: Mapping[str, Context] = field(default_factory=dict)

    def of(self, domain: str) -> Context:
        """Return the context ``domain`` runs with: its own store, stream writer and services."""
        return self.scoped.get(domain, self)

    def stores(self) -> list[RedisStore]:
        """Return every distinct store of the process (one per Redis URL), this one first."""
        found = {id(self.store): self.store}
        for context in self.scoped.values():
            found.setdefault(id(context.store), context.store)
        return list(found.values())

    def need(self, kind: type[T]) -> T:
        """Return the service of type ``kind`` the lifespan registered; raise LookupError."""
        found = self.services.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"no {kind.__name__} among the lifespan's services")
        return found


@dataclass(frozen=True)
class KeyPattern:
    """Keys a domain touches: an ACL glob, how it uses them, and what they are."""

    pattern: str
    access: Access
    what: str

    @property
    def acl(self) -> str:
        """Return the ACL selector that grants this access: ``~p``, ``%R~p`` or ``%W~p``."""
        prefix = {"read": "%R~", "write": "%W~", "read-write": "~"}[self.access]
        return prefix + self.pattern


class Lease(Protocol):
    """A leased queue message, as the queue-worker loop handles it."""

    @property
    def id(self) -> str: ...

    @property
    def receipt(self) -> str: ...

    @property
    def attempt(self) -> int: ...


L = TypeVar("L", bound=Lease)
L_co = TypeVar("L_co", bound=Lease, covariant=True)


class LeasedQueue(Protocol[L_co]):
    """The queue operations the queue-worker loop needs."""

    @property
    def name(self) -> str: ...

    async def receive(self, *, consumer: str, limit: int, wait_s: float) -> Sequence[L_co]: ...

    async def ack(self, message_id: str, receipt: str) -> None: ...

    async def ack_each(self, settled: Sequence[tuple[str, str]]) -> Sequence[str | None]:
        """Acknowledge (id, receipt) pairs in one step; answer None for each that took, else
        why not."""
        ...

    async def nack(self, message_id: str, receipt: str, *, delay_s: float) -> None: ...

    async def extend(
        self, message_id: str, receipt: str, *, visibility_timeout_s: float
    ) -> object: ...


@dataclass(frozen=True)
class QueueJob(Generic[L]):
    """A queue and what to do with each of its messages."""

    queue: LeasedQueue[L]
    handle: Callable[[L], Awaitable[object]]
    # What receiving raises while the queue is not created yet (its producers create it on
    # first use): the worker waits quietly instead of logging an error.
    missing: type[Exception] = NotFound


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group a domain runs on each of ``streams(settings)``: ``count(settings)``
    consumers per stream and process."""

    # Part of each consumer's stable name (``<host>-<process>-<name>-<n>``): changing it
    # orphans the pending entries of the old names until they are claimed.
    name: str
    streams: Callable[[Settings], Sequence[str]]
    group: str
    handle: BatchHandler
    count: Callable[[Settings], int]
    # Run every workers.claim_interval_s by the process's first consumer of each stream.
    housekeeping: Housekeeping | None = None


@dataclass(frozen=True)
class QueueWorkerSpec:
    """A queue a domain consumes: ``count(settings)`` workers per process, each handling up to
    ``concurrency(settings)`` messages at once."""

    name: str
    job: Callable[[Context], QueueJob[Any]]
    count: Callable[[Settings], int]
    concurrency: Callable[[Settings], int] = lambda _settings: 1


class StopConsuming(Exception):
    """Raised by a consumer's housekeeping when the process must not go on consuming (the data
    changed under it); the consumer stops, and the process's readiness fails with the reason."""


class WorkerHealth(Protocol):
    """What a readiness check asks of the process's workers."""

    def problem(self) -> str: ...


@dataclass(frozen=True)
class Domain:
    """One domain's declaration: what it serves, runs, touches and needs."""

    name: str
    routers: Sequence[APIRouter] = ()
    # Part of every process (health, metrics), not a service of its own: ``--services``
    # chooses among the others, and every service's ACL user gets these domains' commands.
    always: bool = False
    # Services whose keys this one reads or writes by design (reporting reads what the profile
    # aggregator counts; videos publish to a messaging queue): they must share a cluster, and
    # start-up refuses a configuration that splits them.
    shares_cluster_with: Sequence[str] = ()
    middleware: Sequence[Middleware] = ()
    consumers: Sequence[ConsumerSpec] = ()
    queue_workers: Sequence[QueueWorkerSpec] = ()
    # The material for a per-service ACL user: every key pattern the domain's code and
    # scripts touch, and the command categories and commands they run.
    keys: Sequence[KeyPattern] = ()
    commands: Sequence[str] = ()
    # Commands of modules the server may lack (ACL SETUSER refuses a command it does not know):
    # granted only where the server has them.
    optional_commands: Sequence[str] = ()
    # Builds the domain's per-process state at start-up, found as ``request.state.<name>``.
    setup: Callable[[Context], Awaitable[object]] | None = None
    # What an operator watches, read from Redis at scrape time (queue depths, stream lag...):
    # metric families named as docs/observability.md lists them, bounded by settings.metrics.
    gauges: Callable[[Context], Awaitable[Sequence[Metric]]] | None = None
