"""Benchmark: messages per second through the messaging module's HTTP routes, against a ceiling.

Run by ``bench/messaging.py`` at the end of its run, on its cluster (``--http-only`` for these
rows alone, with the same options: ``--seconds``, ``--batch``, ``--tasks``, ``--body-bytes``).
``run_http`` serves the service (``app.main:app``) and the ceiling app (``bench.ceiling:app``:
the same paths, request models and answers, touching no Redis) the same way: uvicorn, one
process each, no access log.
Then, in one run, it loads each from this process with one ``httpx.AsyncClient`` (HTTP/1.1
keep-alive, ``--tasks`` connections) and ``--tasks`` concurrent loops, for a fifo queue and for a
topic with one group (created through the HTTP API first):

- publishes for ``--seconds`` in batches (``POST .../messages:batch``), then drains the backlog
  with ``POST .../receive`` + ``POST .../acks:batch`` (same batch size); the ceiling has no
  backlog, so its consumption runs for ``--seconds``;
- publishes one message per request for half the seconds, then receives one and acknowledges
  it per request (until drained; the ceiling for half the seconds), for contrast.

An answer other than the route's success status, or a batch entry other than 201 (published) or
204 (acknowledged), is counted and fails the run at the end: the figures are for successful
work only. ``bench/messaging.py`` calls ``run_http`` against its own cluster. Only ever targets
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.messaging.schemas import MAX_BATCH, MAX_RECEIVE  # noqa: E402
from bench.profiles import free_port  # noqa: E402

HOST = "127.0.0.1"
CONSUMER = "bench"
GROUP = "g"
START_TIMEOUT_S = 60.0

Row = tuple[str, str, float, float]


@contextmanager
def serving(app: str, env: dict[str, str], after: int = 18000) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free loopback port from ``after`` on, as
    bench/profiles.py serves its targets; yield the port and stop the server on the way out."""
    port = free_port(after)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
         "--workers", "1", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{app} exited with {process.returncode} before answering")
            try:
                httpx.get(f"http://{HOST}:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{app} did not answer on port {port}") from None
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Channel:
    """A queue or a topic's group, by the paths its routes hang from."""

    # The queue or the topic (created and read there).
    path: str
    # Where a message is published (``:batch`` appended for a batch).
    publish: str
    # Where receive, acks:batch and messages/{id}/ack hang: the queue, or the topic's group.
    settle: str


class Target:
    """One server under load: its client, how its figures are labelled, what went wrong."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        ceiling: bool,
        seconds: float,
        batch: int,
        tasks: int,
        body_bytes: int,
    ) -> None:
        self.http = http
        self.ceiling = ceiling
        self.name = "ceiling" if ceiling else "service"
        self.seconds = seconds
        self.batch = batch
        self.tasks = tasks
        self.run = secrets.token_hex(4)
        body = {"payload": "x" * body_bytes}
        self.one = json.dumps({"body": body}).encode()
        self.many = json.dumps({"messages": [{"body": body}] * batch}).encode()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def label(self, how: str) -> str:
        return f"HTTP ceiling (no Redis), {how}" if self.ceiling else f"HTTP, {how}"

    def failed(self, what: str, text: str) -> None:
        self.errors[what] += 1
        self.examples.setdefault(what, text[:300])

    async def post(
        self, what: str, path: str, content: bytes, expected: int
    ) -> httpx.Response | None:
        """POST ``content`` to ``path``; return the answer, or None when its status is not
        ``expected`` (counted)."""
        response = await self.http.post(path, content=content)
        if response.status_code != expected:
            self.failed(f"{what}: HTTP {response.status_code}", response.text)
            return None
        return response

    def entries(self, what: str, response: httpx.Response | None, expected: int) -> int:
        """Return how many of a batch's results have the ``expected`` status (others counted)."""
        if response is None:
            return 0
        ok = 0
        for result in response.json()["results"]:
            if result["status"] == expected:
                ok += 1
            else:
                self.failed(f"{what}: entry {result['status']}", json.dumps(result))
        return ok

    async def rate(self, step: Callable[[], Awaitable[int]], seconds: float | None) -> float:
        """Return items per second of ``step`` in ``tasks`` loops: for ``seconds``, or until it
        returns 0 everywhere when None."""
        # Imported here: bench/messaging.py imports this module.
        from bench.messaging import for_seconds, until_drained

        if seconds is None:
            return await until_drained(self.tasks, step)
        return await for_seconds(seconds, self.tasks, step)

    async def create(self, path: str, settings: dict[str, Any]) -> None:
        """Create a queue, topic or group through the service's API (the ceiling has none)."""
        if self.ceiling:
            return
        response = await self.http.put(path, json=settings)
        if response.status_code != 201:
            raise RuntimeError(f"PUT {path}: HTTP {response.status_code} {response.text}")

    async def channel(self, kind: str, how: str) -> Channel:
        """Create (on the service) a fifo queue or a topic with one group, named for this run."""
        if kind == "fifo queue":
            name = f"bench-http-fifo-{how}-{self.run}"
            await self.create(f"/queues/{name}", {"kind": "fifo", "visibility_timeout_s": 300})
            return Channel(f"/queues/{name}", f"/queues/{name}/messages", f"/queues/{name}")
        name = f"bench-http-topic-{how}-{self.run}"
        await self.create(f"/topics/{name}", {"visibility_timeout_s": 300})
        await self.create(f"/topics/{name}/groups/{GROUP}", {"start": "earliest"})
        return Channel(
            f"/topics/{name}", f"/topics/{name}/messages", f"/topics/{name}/groups/{GROUP}"
        )

    async def check_drained(self, channel: Channel) -> None:
        """Count a service's channel that still holds messages once consumption stopped."""
        if self.ceiling:
            return
        response = await self.http.get(channel.path)
        response.raise_for_status()
        info = response.json()
        if "counts" in info:
            left = info["counts"]["ready"] + info["counts"]["in_flight"]
        else:
            (group,) = info["groups"]
            left = group["in_flight"] + (group["undelivered"] or 0)
        if left:
            self.failed(f"{channel.path}: not drained", response.text)

    async def batches(self, kind: str) -> Row:
        """Publish in batches for the seconds, then receive and acknowledge in batches."""
        channel = await self.channel(kind, f"x{self.batch}")
        receive = json.dumps({"max": self.batch, "wait_s": 0, "consumer": CONSUMER}).encode()

        async def publish() -> int:
            answer = await self.post("publish batch", f"{channel.publish}:batch", self.many, 200)
            return self.entries("publish batch", answer, 201)

        async def consume() -> int:
            got = await self.post("receive", f"{channel.settle}/receive", receive, 200)
            messages = [] if got is None else got.json()["messages"]
            if not messages:
                return 0
            entries = [{"id": m["id"], "receipt": m["receipt"]} for m in messages]
            acks = json.dumps({"entries": entries}).encode()
            answer = await self.post("ack batch", f"{channel.settle}/acks:batch", acks, 200)
            return self.entries("ack batch", answer, 204)

        published = await self.rate(publish, self.seconds)
        consumed = await self.rate(consume, self.seconds if self.ceiling else None)
        await self.check_drained(channel)
        return kind, self.label(f"batches of {self.batch}"), published, consumed

    async def one_by_one(self, kind: str) -> Row:
        """Publish one message per request, then receive one and acknowledge it per request."""
        channel = await self.channel(kind, "x1")
        receive = json.dumps({"max": 1, "wait_s": 0, "consumer": CONSUMER}).encode()
        seconds = self.seconds / 2

        async def publish() -> int:
            answer = await self.post("publish", channel.publish, self.one, 201)
            return 0 if answer is None else 1

        async def consume() -> int:
            got = await self.post("receive one", f"{channel.settle}/receive", receive, 200)
            messages = [] if got is None else got.json()["messages"]
            if not messages:
                return 0
            (message,) = messages
            ack = json.dumps({"receipt": message["receipt"]}).encode()
            path = f"{channel.settle}/messages/{message['id']}/ack"
            return 0 if await self.post("ack", path, ack, 204) is None else 1

        published = await self.rate(publish, seconds)
        consumed = await self.rate(consume, seconds if self.ceiling else None)
        await self.check_drained(channel)
        return kind, self.label("one message per request"), published, consumed


async def measure(
    ports: dict[str, int], *, seconds: float, batch: int, tasks: int, body_bytes: int
) -> list[Row]:
    """Load the service and the ceiling alike, alternating them; raise if any answer failed."""
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    headers = {"content-type": "application/json"}
    rows: list[Row] = []

    def client(port: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", limits=limits, headers=headers, timeout=30
        )

    async with client(ports["service"]) as service, client(ports["ceiling"]) as ceiling:
        targets = [
            Target(
                http,
                ceiling=http is ceiling,
                seconds=seconds,
                batch=batch,
                tasks=tasks,
                body_bytes=body_bytes,
            )
            for http in (service, ceiling)
        ]
        for kind in ("fifo queue", "topic"):
            rows += [await target.batches(kind) for target in targets]
            rows += [await target.one_by_one(kind) for target in targets]
    problems = [
        f"{target.name} {what} x{count} (first: {target.examples[what]})"
        for target in targets
        for what, count in target.errors.items()
    ]
    if problems:
        # A fast error is not fast work: the figures would mean nothing.
        raise RuntimeError("unexpected answers: " + "; ".join(problems))
    return rows


def run_http(
    cluster_url: str, *, seconds: float, batch: int, tasks: int, body_bytes: int
) -> list[Row]:
    """Serve the service on ``cluster_url`` and the ceiling app, load both over HTTP, stop them;
    return rows (channel, how, published per second, consumed per second).

    Call it outside a running event loop (it runs its own).
    """
    if not 1 <= batch <= min(MAX_BATCH, MAX_RECEIVE):
        raise ValueError(f"batch must be 1 to {min(MAX_BATCH, MAX_RECEIVE)}, the routes' limit")
    env = {
        **os.environ,
        "REDIS_URL": cluster_url,
        # The service's own access line, on top of uvicorn's (off with --no-access-log).
        "APP_LOGGING__ACCESS_LOG": "false",
        "APP_SERVER__LOG_LEVEL": "warning",
        "BENCH_BODY_BYTES": str(body_bytes),
    }
    with ExitStack() as servers:
        service = servers.enter_context(serving("app.main:app", env))
        ceiling = servers.enter_context(serving("bench.ceiling:app", env, after=service + 1))
        return asyncio.run(
            measure(
                {"service": service, "ceiling": ceiling},
                seconds=seconds,
                batch=batch,
                tasks=tasks,
                body_bytes=body_bytes,
            )
        )


def print_http(rows: list[Row], *, tasks: int, body_bytes: int) -> None:
    """Print ``run_http``'s rows and the service / ceiling ratios."""
    print(
        f"messages/s over HTTP, {tasks} concurrent requests, bodies of {body_bytes} "
        "bytes, appendfsync always, one uvicorn process each"
    )
    print(f"  {'channel':<10} {'how':<48} {'published':>10} {'consumed':>10}")
    for channel, how, published, consumed in rows:
        print(f"  {channel:<10} {how:<48} {published:>10,.0f} {consumed:>10,.0f}")
    print("ratios (service / ceiling), published and consumed:")
    for (channel, how, *service), (_, _, *ceiling) in zip(rows[::2], rows[1::2], strict=True):
        print(
            f"  {channel:<10} {how.removeprefix('HTTP, '):<30} "
            f"{service[0] / ceiling[0]:.2f}  {service[1] / ceiling[1]:.2f}"
        )
