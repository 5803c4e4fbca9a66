"""Building the Redis client (cluster or single node) and the retry policy around it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import EqualJitterBackoff
from redis.typing import EncodableT

from app.autopipeline import AutoPipeline, command_name
from app.config import RedisSettings
from app.errors import ServiceUnavailable
from app.metrics import (
    REDIS_DURATION,
    REDIS_ERRORS,
    REDIS_POOL_EXHAUSTED,
    REDIS_REDIRECTIONS,
    REDIS_RETRIES,
    REDIS_RETRY_OUTCOMES,
    HistogramTally,
)
from app.redis_internals import ClusterClient, ClusterNode, replicas

logger = logging.getLogger(__name__)

T = TypeVar("T")
RedisClient = Redis | RedisCluster

REDIS_CONNECTION_MODULE = str(Path("redis", "asyncio", "connection.py"))
AUTH_ERRORS = (rexc.AuthenticationError, rexc.AuthorizationError)
# Failures that a topology change, failover or brief network loss explains, and that the same
# call can ride out after a pause. redis-py's own cluster retries re-send at once, without a
# pause, so a failover of a few seconds exhausts them; this policy waits between attempts.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    TimeoutError,  # an attempt that outlived RetryPolicy.timeout_s
    rexc.ClusterDownError,
    # A slot moving (resharding): a multi-key command or script whose keys are split between
    # the two nodes answers TRYAGAIN until the move ends; redis-py re-sends it for under half a
    # second, then raises ClusterError("TTL exhausted.") (it raises ClusterError for nothing
    # else: ClusterDownError, a subclass, is the cluster down).
    rexc.TryAgainError,
    rexc.ClusterError,
    rexc.ReadOnlyError,
    rexc.SlotNotCoveredError,
)
# Answers that name another node for the key: the general path follows them.
REDIRECTIONS: tuple[type[Exception], ...] = (rexc.MovedError, rexc.AskError)

# What the policy looks at; _transient() decides which of these to retry.
RETRY_CANDIDATES: tuple[type[Exception], ...] = (
    *TRANSIENT_ERRORS,
    AttributeError,
    TypeError,
    RuntimeError,
)
# This package: an error raised in its own code is never redis-py's connection failing.
APP_DIR = str(Path(__file__).resolve().parent)

# How long a read waits for a replica before it asks the primary instead: a fraction of the
# request's retry deadline (redis.retry_deadline_s), so a replica that hangs slows the reads
# already sent to it, and the primary still answers them in time.
REPLICA_TIMEOUT_S = 1.0
# How long a replica that failed a read is left out before reads try it again: long enough
# that a dead replica costs one failed read per period, short enough that a restarted one is
# back soon (the client's slot table drops a replica only on a full topology refresh).
REPLICA_RETRY_AFTER_S = 2.0


# When the HTTP request being served began (time.monotonic()), set by app.middleware: the Redis
# operations of one request share one retry deadline, so the request answers within it.
REQUEST_STARTED: ContextVar[float | None] = ContextVar("request_started", default=None)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    redis-py's own ``Retry`` only sets how many times its cluster client re-sends, at once;
    this loop pauses between attempts (long enough to ride out a failover) and bounds each
    attempt's time. The pauses are redis-py's equal-jitter backoff: half the exponential
    ceiling, plus up to as much again at random.
    """

    attempts: int
    base_s: float
    cap_s: float
    # The time one attempt may take. The client has no socket timeout of its own: with one,
    # redis-py sends every command through a task of its own (asyncio.wait_for); one timer
    # around the whole attempt is cheaper (docs/benchmarks.md).
    timeout_s: float = 5.0
    # The time the whole operation may take, retries and pauses included: past it the caller
    # gets ServiceUnavailable (a 503), so a request answers within it even when a failover
    # takes longer. None: bounded by ``attempts`` only.
    deadline_s: float | None = None
    backoff: EqualJitterBackoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backoff", EqualJitterBackoff(cap=self.cap_s, base=self.base_s))

    def delay(self, attempt: int) -> float:
        """Return the pause before retry number ``attempt`` (0-based)."""
        return float(self.backoff.compute(attempt))

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        what: str,
        command: str = "other",
        retried: bool = False,
    ) -> T:
        """Run ``operation``, retrying transient Redis failures; raise ServiceUnavailable.

        ``command`` labels the operation's failures in the metrics (a bounded set of names);
        ``retried`` says that this run is already a retry of a failed first attempt.
        """
        attempt = 0
        deadline = None
        if self.deadline_s is not None:
            # Within a request, from when it began: its operations share one deadline.
            deadline = (REQUEST_STARTED.get() or time.monotonic()) + self.deadline_s
        while True:
            timeout_s = self.timeout_s
            if deadline is not None:
                timeout_s = min(timeout_s, max(deadline - time.monotonic(), 0.001))
            try:
                async with asyncio.timeout(timeout_s):
                    result = await operation()
                if attempt or retried:
                    REDIS_RETRY_OUTCOMES.labels("recovered").inc()
                return result
            except AUTH_ERRORS:
                raise
            except RETRY_CANDIDATES as exc:
                if _certificate_rejected(exc) or not _transient(exc):
                    raise
                count_error(command, exc)
                pause = self.delay(attempt)
                out_of_time = deadline is not None and time.monotonic() + pause >= deadline
                if attempt >= self.attempts or out_of_time:
                    REDIS_RETRY_OUTCOMES.labels("exhausted").inc()
                    logger.error(
                        "redis unavailable: what=%s attempts=%d error=%s",
                        what,
                        attempt,
                        describe(exc),
                    )
                    raise ServiceUnavailable(
                        "The database is unavailable (failover or network trouble); retry shortly"
                    ) from exc
                logger.warning(
                    "redis call failed, retrying: what=%s attempt=%d pause=%.2fs error=%s",
                    what,
                    attempt + 1,
                    pause,
                    describe(exc),
                )
                attempt += 1
                REDIS_RETRIES.inc()
                await asyncio.sleep(pause)
            except rexc.ResponseError:
                # The server answered (a new primary without the script cached says NOSCRIPT):
                # the failure is over; the error is the command's own.
                if attempt or retried:
                    REDIS_RETRY_OUTCOMES.labels("recovered").inc()
                raise


def count_error(command: str, exc: BaseException) -> None:
    """Count a failed Redis command in the metrics (and a pool without a free connection)."""
    if isinstance(exc, rexc.NoScriptError):
        return  # a script not cached on that node yet: loaded and sent again (app.scripting)
    REDIS_ERRORS.labels(command, type(exc).__name__).inc()
    if isinstance(exc, rexc.MaxConnectionsError):
        REDIS_POOL_EXHAUSTED.inc()


def describe(exc: BaseException) -> str:
    """Return ``Type: message`` (redis-py's repr of its errors hides the message)."""
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is a transient failure.

    redis-py up to 8.1.0 can raise AttributeError or TypeError from a connection that the
    server closed under it (redis-py #4287, seen here during a primary's failover), and under
    uvloop a write to such a connection raises RuntimeError ("the handler is closed") from
    the transport redis-py writes to (seen here in a failover test). The pool reconnects on the
    next use, so these are transient when raised inside redis-py's connection code or below it
    (the event loop's transport), and programming errors anywhere else: any frame of this
    package under redis-py's makes it ours.
    """
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [
        i for i, frame in enumerate(frames) if frame.filename.endswith(REDIS_CONNECTION_MODULE)
    ]
    if not inside:
        return False
    return not any(frame.filename.startswith(APP_DIR) for frame in frames[inside[-1] + 1 :])


def _replica_failure(exc: BaseException) -> bool:
    """Return whether a replica failed a read that its primary can still answer.

    The replica is unreachable or timed out, still loading its data set (LOADING, a
    ConnectionError), cut off from its primary (MASTERDOWN, a ClusterDownError), refuses our
    user (a node without the ACL users), or is no longer a replica of the slot, or the
    connection lacks READONLY (MOVED, ASK). NOPERM too: ACL users are per node, and a replica
    whose users are behind its primary's refuses what the primary allows (if the primary
    refuses it as well, its answer is the caller's error). Any other error reply of the command
    itself (NOSCRIPT, WRONGTYPE...) is not the replica's failure: the primary would answer the
    same.
    """
    return isinstance(exc, (*REDIRECTIONS, rexc.NoPermissionError)) or (
        isinstance(exc, RETRY_CANDIDATES) and _transient(exc)
    )


def _certificate_rejected(exc: BaseException) -> bool:
    """Return whether TLS verification failed: a wrong CA or name, which no retry mends."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(frozen=True)
class RedisStore:
    """The shared client and the retry policy every call goes through.

    The lifespan builds the client and the automatic pipeline, hands them to the store, and
    closes them (``open_store`` does the same for tools and tests).
    """

    client: RedisClient
    retry: RetryPolicy
    # Single-slot commands of concurrent requests, sent to each node as one pipeline (see
    # app.autopipeline); used by ``call`` in a cluster.
    pipeline: AutoPipeline
    # redis.read_from_replicas: ``call(..., replica=True)`` reads from a replica of the key's
    # shard. The client's connections must say READONLY (``connect_client`` makes them so).
    read_from_replicas: bool = False
    # Replicas that failed a read, by node name, and until when (time.monotonic()) they are
    # left out; and the turn that spreads reads over a shard's replicas.
    _replicas_down: dict[str, float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _turns: Iterator[int] = field(
        default_factory=itertools.count, init=False, repr=False, compare=False
    )

    @property
    def is_cluster(self) -> bool:
        """Return whether the client talks to a Redis Cluster."""
        return isinstance(self.client, RedisCluster)

    async def call(
        self,
        key: str,
        *command: EncodableT,
        what: str,
        probe: bool = False,
        replica: bool = False,
        now: bool = False,
    ) -> Any:
        """Run one command that touches only ``key``'s slot, under the retry policy.

        In a cluster the command goes straight to the node that serves the key's slot, from the
        client's slot table: redis-py's general path (command parsing to find the keys, routing
        policies, metrics) costs about as much CPU again as the round trip (docs/benchmarks.md).
        It travels in that node's automatic pipeline, with the
        other requests' commands of the same turn of the event loop (app.autopipeline), so it
        must not be a command that blocks on the server (BLPOP, XREAD BLOCK...): use ``run``
        for those. A MOVED or ASK reply, or a failed node, hands the command to the general
        path, which follows the redirection and refreshes the slot table (and, after a failure
        where the command may have run, sends it again, as redis-py's own retries do: the
        writes here are idempotent, or say why not). A ``probe`` asks whether the server can
        do something: its error reply is an answer, not counted as a failed command.

        A ``replica`` read (a command that writes nothing) goes, when the store reads from
        replicas, to one of the replicas of the key's shard, in turn; it may miss the latest
        writes. A shard without a healthy replica, or a replica that fails the read, leaves it
        to the primary, in this same call. Without replica reads, ``replica`` changes nothing.

        A command sent ``now`` carries the callers of its turn already (a coalesced step): it
        does not wait for the turn's other commands (``AutoPipeline.send_now``).
        """
        client = self.client
        name = command_name(command)
        started = time.perf_counter()
        retried = False
        if isinstance(client, RedisCluster):
            if replica and self.read_from_replicas:
                node = self._replica_for(client, key)
                if node is not None:
                    try:
                        async with asyncio.timeout(REPLICA_TIMEOUT_S):
                            reply = await self.pipeline.send(node, command)
                        _observe(name, time.perf_counter() - started)
                        return reply
                    except Exception as exc:
                        if not _replica_failure(exc):
                            if not probe:
                                count_error(name, exc)
                            raise
                        self._replica_failed(node, name, exc, what=what)
            # The common case, kept out of the retry loop's frames and timer: the batch's own
            # timer (AutoPipeline.timeout_s) bounds the wait.
            try:
                node = client.get_node_from_key(key)
                if node is not None:
                    if now:
                        reply = await self.pipeline.send_now(node, command)
                    else:
                        reply = await self.pipeline.send(node, command)
                    _observe(name, time.perf_counter() - started)
                    return reply
            except REDIRECTIONS as exc:
                kind = "moved" if isinstance(exc, rexc.MovedError) else "ask"
                REDIS_REDIRECTIONS.labels(kind).inc()
            except RETRY_CANDIDATES as exc:
                count_error(name, exc)
                if not _transient(exc):
                    raise
                # The general path below is this command's retry.
                retried = True
                REDIS_RETRIES.inc()
            except Exception as exc:
                if not probe:
                    count_error(name, exc)
                raise
        reply = await self.retry.run(
            lambda: self._call_general(command), what=what, command=name, retried=retried
        )
        _observe(name, time.perf_counter() - started)
        return reply

    def _replica_for(self, client: RedisCluster, key: str) -> ClusterNode | None:
        """Return the replica of ``key``'s shard whose turn it is, None if none is healthy."""
        found = replicas(client, key)
        if not found:
            return None
        if self._replicas_down:
            now = time.monotonic()
            found = [node for node in found if self._replicas_down.get(node.name, 0.0) <= now]
            if not found:
                return None
        return found[next(self._turns) % len(found)]

    def _replica_failed(
        self, node: ClusterNode, command: str, exc: Exception, *, what: str
    ) -> None:
        """Leave a replica that failed a read out for a while; the primary takes the read."""
        count_error(command, exc)
        if isinstance(exc, rexc.MaxConnectionsError):
            return  # this client's pool to it is busy: the replica is not at fault
        now = time.monotonic()
        if self._replicas_down.get(node.name, 0.0) <= now:
            logger.warning(
                "replica failed a read, reading from the primary: what=%s replica=%s "
                "left_out_s=%.1f error=%s",
                what,
                node.name,
                REPLICA_RETRY_AFTER_S,
                describe(exc),
            )
        self._replicas_down[node.name] = now + REPLICA_RETRY_AFTER_S

    async def load_script(self, source: str, *, key: str, what: str, replica: bool = False) -> None:
        """Load a script on every primary and, for a ``replica`` read when the store reads from
        replicas, on the replicas of ``key``'s shard.

        Redis 7 does not pass SCRIPT LOAD on to replicas: each replica that runs the script
        needs it loaded on itself. A replica that fails to load it is left out of reads for a
        while, as when it fails a read.
        """
        await self.run(lambda r: r.script_load(source), what=what)
        client = self.client
        if not (replica and self.read_from_replicas and isinstance(client, RedisCluster)):
            return
        command: tuple[EncodableT, ...] = ("SCRIPT LOAD", source)
        for node in replicas(client, key):
            try:
                async with asyncio.timeout(REPLICA_TIMEOUT_S):
                    await self.pipeline.send(node, command)
            except Exception as exc:
                if not _replica_failure(exc):
                    raise
                self._replica_failed(node, "SCRIPT LOAD", exc, what=what)

    async def _call_general(self, command: tuple[EncodableT, ...]) -> Any:
        # The client's general path: it follows MOVED and ASK and refreshes the slot table.
        return await self.client.execute_command(*command)

    async def run(self, operation: Callable[[RedisClient], Awaitable[Any]], *, what: str) -> Any:
        """Run ``operation(client)`` under the retry policy.

        redis-py types replies as ``bytes | str`` whatever ``decode_responses`` says; callers
        annotate what they receive (this client always decodes to ``str``).
        """
        return await self.retry.run(lambda: operation(self.client), what=what)


# Latency tallies by command name, made on first use (app.metrics).
_DURATIONS: dict[str, HistogramTally] = {}


def _observe(command: str, elapsed: float) -> None:
    tally = _DURATIONS.get(command)
    if tally is None:
        tally = _DURATIONS[command] = HistogramTally(REDIS_DURATION.labels(command))
    tally.observe(elapsed)


def retry_policy(settings: RedisSettings) -> RetryPolicy:
    return RetryPolicy(
        attempts=settings.retry_attempts,
        base_s=settings.retry_backoff_base_s,
        cap_s=settings.retry_backoff_cap_s,
        timeout_s=settings.socket_timeout_s,
        deadline_s=settings.retry_deadline_s,
    )


def _client_options(settings: RedisSettings, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": True,
        # Enforced around each call instead (RetryPolicy.timeout_s, and the workers' loop).
        "socket_timeout": None,
        "socket_connect_timeout": settings.socket_connect_timeout_s,
        "max_connections": settings.max_connections,
        "health_check_interval": 30,
        # No CLIENT SETINFO on connect: a least-privilege user may not run it (Redis 7.0 knows
        # no such subcommand to grant), and every refusal would land in the server's ACL LOG.
        "driver_info": None,
    }
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        options["ssl_check_hostname"] = settings.tls_check_hostname
        if settings.tls_ca_file:
            options["ssl_ca_certs"] = settings.tls_ca_file
    return options


async def server_is_cluster(client: Redis) -> bool:
    """Ask the server whether it runs in cluster mode."""
    try:
        info = await client.info("cluster")
        return bool(info.get("cluster_enabled"))
    except rexc.NoPermissionError:
        # An ACL user without INFO: CLUSTER INFO answers on a cluster and errors on a single node.
        try:
            await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        except rexc.ResponseError:
            return False
        return True


async def connect_client(settings: RedisSettings, url: str) -> RedisClient:
    """Connect to ``url``, detecting a cluster from the server, and check that it answers."""
    options = _client_options(settings, url)
    policy = retry_policy(settings)
    probe = Redis.from_url(url, **options)
    try:
        is_cluster = await policy.run(lambda: server_is_cluster(probe), what="detect cluster")
    except BaseException:
        await probe.aclose()
        raise
    if not is_cluster:
        return probe
    await probe.aclose()
    # redis-py's client, able to follow an ASK to a primary added while it runs (a resize).
    cluster = ClusterClient.from_url(
        url,
        # Patch the one slot a MOVED names instead of closing every in-use connection for a
        # full refresh: that refresh is what re-sent already-applied writes in failover tests.
        reinitialize_steps=0,
        require_full_coverage=False,
        # Replica reads: every connection says READONLY, or a replica answers MOVED; what goes
        # to a replica stays RedisStore.call's choice (app.redis_internals).
        readonly_connections=settings.read_from_replicas,
        **options,
    )
    try:
        await policy.run(cluster.initialize, what="cluster topology")
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


@asynccontextmanager
async def open_store(settings: RedisSettings, url: str) -> AsyncIterator[RedisStore]:
    """Open a client and its automatic pipeline as a store; close both on exit.

    The lifespan builds the same pieces one by one (it owns each); tools and tests use this.
    """
    client = await connect_client(settings, url)
    pipeline = AutoPipeline(timeout_s=settings.socket_timeout_s)
    try:
        yield RedisStore(
            client=client,
            retry=retry_policy(settings),
            pipeline=pipeline,
            read_from_replicas=settings.read_from_replicas,
        )
    finally:
        try:
            await pipeline.aclose()
        finally:
            await client.aclose()


async def cluster_state(store: RedisStore) -> str:
    """Return 'ok' when the server (every known primary, in a cluster) is healthy, else why not."""
    client = store.client
    if isinstance(client, RedisCluster):
        try:
            return await _primaries_state(client)
        except rexc.ConnectionError:
            # A primary removed from the cluster (a scale-in) stays in the client's topology
            # until something refreshes it; the failed call marked it for a refresh: ask the
            # primaries of the cluster as it is now.
            await client.initialize()
            return await _primaries_state(client)
    await client.ping()
    return "ok"


async def _primaries_state(client: RedisCluster) -> str:
    for node in client.get_primaries():
        info = await client.execute_command("CLUSTER", "INFO", target_nodes=node)
        state = parse_cluster_info(info).get("cluster_state")
        if state != "ok":
            return f"node {node.name} reports cluster_state={state}"
    return "ok"


def parse_cluster_info(raw: Any) -> dict[str, str]:
    """Return a CLUSTER INFO reply (text, bytes or already a mapping) as a dict of strings."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}
