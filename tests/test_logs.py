"""Logs against the real cluster: the served service (``python -m app serve --workers 2``) and
the standalone workers write JSON lines from every process, a request's lines are found by its
request id, a Redis password never shows, and workers' lines carry their stream or queue."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import logs
from app.config import MessagingSettings, Settings
from app.domain import ConsumerSpec, StreamEntry
from app.local_cluster import LocalCluster
from app.messaging import Broker, Delivery, MessagePublish, QueueCreate
from app.redis import RedisStore, open_store
from tests.conftest import PROJECT_ROOT, eventually
from tests.service import HOST, free_port
from tests.test_serve import run_cli
from workers.consumer import StreamConsumer
from workers.queue_worker import QueueWorker

REQUEST_ID = "test-abc-123"
PROCESSES = 2


def parse(output: str) -> list[dict[str, Any]]:
    """Parse every line of ``output`` as one JSON object (failing on any line that is not)."""
    parsed = []
    for line in output.splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """Run ``python -m app serve --workers 2`` with ``env``, its stdout and stderr in ``log``;
    yield its URL once it answers, and stop it with SIGTERM (as a supervisor would)."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APP_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--workers",
                str(PROCESSES),
                "--port",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=clean | env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                ready = httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            # Every process up, not only the one that answered.
            if ready and log.read_text().count("Started server process") >= PROCESSES:
                break
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


@pytest.mark.slow
def test_served_processes_log_json_lines_with_the_request_id(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    env = {"REDIS_URL": cluster.url, "APP_LOGGING__FORMAT": "json"}
    with serving(env, log) as url:
        answer = httpx.get(f"{url}/profile/nobody-here", headers={"X-Request-ID": REQUEST_ID})
        insane = httpx.get(f"{url}/profile/nobody-here", headers={"X-Request-ID": "two words"})
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == REQUEST_ID
    new_id = insane.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id)

    # Every line, from the supervisor and from both HTTP processes, is one JSON object.
    lines = parse(log.read_text())
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines
    )
    assert any(line["logger"] == "app.serve" for line in lines), "the supervisor's lines"
    started = [line for line in lines if line["message"].startswith("Started server process")]
    assert len(started) == PROCESSES
    assert {line["logger"] for line in started} == {"uvicorn.error"}
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]

    # One request's lines, found by its id: every line that mentions it carries it.
    mentioning = [line for line in lines if REQUEST_ID in json.dumps(line)]
    assert mentioning
    assert all(line.get("request_id") == REQUEST_ID for line in mentioning)
    [access] = [line for line in mentioning if line["logger"] == "app.access"]
    assert access["message"] == "request"
    assert (access["method"], access["route"], access["status"]) == ("GET", "/profile/{user}", 404)
    assert 0 < access["duration_s"] < 10
    [replaced] = [line for line in lines if line.get("request_id") == new_id]
    assert replaced["logger"] == "app.access"

    # The workers inside the HTTP processes: their lines carry stream, group and consumer.
    consumers = [line for line in lines if line["message"].startswith("consumer starting")]
    assert {line["stream"] for line in consumers} >= {"profile:events"}
    assert all(line["group"] and line["consumer"] for line in consumers)


@pytest.mark.slow
def test_a_redis_password_never_appears_in_the_output() -> None:
    port = free_port()
    url = f"redis://u:hunter2@127.0.0.1:{port}"
    result = run_cli(
        ["-m", "app", "serve", "--workers", str(PROCESSES), "--port", str(free_port())],
        {"REDIS_URL": url, "APP_REDIS__RETRY_ATTEMPTS": "0", "APP_LOGGING__FORMAT": "json"},
    )
    output = result.stdout + result.stderr
    assert "hunter2" not in output
    assert result.returncode == 1
    *logged, last = result.stderr.strip().splitlines()
    assert last == "error: the HTTP processes keep failing at start-up; see the log above"
    lines = parse("\n".join(logged))
    [starting] = [line for line in lines if line["message"].startswith("starting:")]
    assert f"redis=redis://u:***@127.0.0.1:{port} " in starting["message"]
    # The children failed at start-up and said so, in the same format, with the traceback
    # (uvicorn logs it as the message).
    failures = [line for line in lines if line["message"] == "Application startup failed. Exiting."]
    assert len(failures) >= PROCESSES
    assert any("ServiceUnavailable" in line["message"] for line in lines)


def test_the_standalone_workers_log_json_lines_with_their_fields(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    log = tmp_path / "workers.log"
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("APP_")}
    env = clean | {"REDIS_URL": cluster.url, "APP_LOGGING__FORMAT": "json"}
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "queue worker starting" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    lines = parse(log.read_text())
    [starting] = [line for line in lines if line["message"].startswith("starting workers")]
    assert starting["logger"] == "workers"
    assert starting["message"].endswith(" loop=uvloop")  # the API processes' loop (uvicorn's)
    [consumer] = [line for line in lines if line["message"].startswith("consumer starting")]
    assert (consumer["stream"], consumer["group"]) == ("profile:events", "profile-aggregator")
    assert consumer["consumer"].endswith("-aggregator-0")
    queue_lines = [line for line in lines if line["logger"] == "workers.queue_worker"]
    assert queue_lines
    assert all(line["queue"] and line["consumer"] for line in queue_lines)


@pytest.fixture
def records() -> Iterator[io.StringIO]:
    """JSON lines of every record at WARNING and above, with their context fields."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


async def test_a_consumer_batch_logs_its_stream_group_and_consumer(
    cluster: LocalCluster, settings: Settings, records: io.StringIO
) -> None:
    stream, group = "logs:test", "logs-group"

    async def handle(store: RedisStore, _stream: str, entries: list[StreamEntry]) -> int:
        logging.getLogger("app.test").warning("applying %d entries", len(entries))
        return int(await store.client.xack(stream, group, *(entry for entry, _ in entries)))

    spec = ConsumerSpec(
        name="t", streams=lambda _: [stream], group=group, handle=handle, count=lambda _: 1
    )
    async with open_store(settings.redis, cluster.url) as store:
        await store.client.xadd(stream, {"n": "1"})
        consumer = StreamConsumer(
            store=store, spec=spec, stream=stream, consumer="c-1", settings=settings.workers
        )
        task = asyncio.create_task(consumer.run())

        async def applied() -> bool:
            return consumer.stats.acknowledged == 1

        await eventually(applied, what="the entry to be applied")
        consumer.stop()
        await task
    [line] = [line for line in parse(records.getvalue()) if line["logger"] == "app.test"]
    assert line["message"] == "applying 1 entries"
    assert (line["stream"], line["group"], line["consumer"]) == (stream, group, "c-1")


async def test_a_queue_workers_lines_carry_the_queue_and_message_id(
    cluster: LocalCluster, settings: Settings, records: io.StringIO
) -> None:
    async with open_store(settings.redis, cluster.url) as store:
        queue = Broker(store=store, settings=MessagingSettings()).queue("logs-work")
        await queue.create(QueueCreate(max_deliveries=1))
        published = await queue.publish(MessagePublish(body="poison"))

        async def fail(delivery: Delivery) -> None:
            logging.getLogger("app.test").warning("handling attempt %d", delivery.attempt)
            raise ValueError("cannot handle it")

        worker = QueueWorker(queue=queue, consumer="w-1", handle=fail, retry_delay_s=0.05)
        task = asyncio.create_task(worker.run())

        async def failed() -> bool:
            return worker.stats.failed == 1

        await eventually(failed, what="the message to fail")
        worker.stop()
        await task
    lines = [line for line in parse(records.getvalue()) if "message_id" in line]
    # The handler's own line and the worker's, about the same message.
    assert {line["logger"] for line in lines} == {"app.test", "workers.queue_worker"}
    assert all(
        (line["queue"], line["consumer"], line["message_id"]) == ("logs-work", "w-1", published.id)
        for line in lines
    )
