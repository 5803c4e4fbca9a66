"""Log lines: the text and JSON formats, context fields, uvicorn's loggers, request ids, and
secrets that never reach the output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app import logs
from app.config import Settings
from app.middleware import RequestContext
from app.serve import ServeOptions, _uvicorn_config

Format = Literal["text", "json"]
FORMATS: tuple[Format, ...] = ("text", "json")
LOGGED = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access", "app.access")
TEXT_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"(?P<rest>.*)"
)
WORKER_FIELDS = {
    "stream": "profile:events",
    "group": "profile-aggregator",
    "consumer": "host-1-0-aggregator-0",
    "message_id": "1700000000000-0",
}


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """A stream for configure_logging; the loggers it changes are restored afterwards."""
    root = logging.getLogger()
    level = root.level
    saved = {
        name: (logger.handlers[:], logger.propagate, logger.level)
        for name in LOGGED
        for logger in [logging.getLogger(name)]
    }
    stream = io.StringIO()
    yield stream
    for handler in root.handlers[:]:
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, (handlers, propagate, logger_level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(logger_level)


def configure(stream: io.StringIO, log_format: Format, **settings: Any) -> None:
    logs.configure_logging(Settings(logging={"format": log_format}, **settings), stream)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def test_json_line_has_time_level_logger_message_and_every_field(output: io.StringIO) -> None:
    configure(output, "json")
    before = time.time()
    with logs.log_context(request_id="req-1", **WORKER_FIELDS):
        logging.getLogger("app.access").info(
            "request %s",
            "done",
            extra={"method": "GET", "route": "/profile/{user}", "status": 404, "duration_s": 0.25},
        )
    [line] = json_lines(output)
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "app.access",
        "message": "request done",
        "request_id": "req-1",
        "method": "GET",
        "route": "/profile/{user}",
        "status": 404,
        "duration_s": 0.25,
        **WORKER_FIELDS,
    }
    assert line["time"].endswith("Z")
    logged = datetime.fromisoformat(line["time"]).timestamp()
    assert before - 0.001 <= logged <= time.time()


def test_text_line_is_time_level_logger_message_then_fields(output: io.StringIO) -> None:
    configure(output, "text")
    with logs.log_context(request_id="req-2", **WORKER_FIELDS):
        logging.getLogger("workers.consumer").warning(
            "batch failed", extra={"route": "/queues/{name}", "error": "two words"}
        )
    [line] = lines(output)
    parsed = TEXT_LINE.fullmatch(line)
    assert parsed is not None, line
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "workers.consumer"
    fields = " ".join(f"{key}={value}" for key, value in WORKER_FIELDS.items())
    # A value with a space is quoted, so the line still splits into key=value pairs.
    assert parsed["rest"] == (
        f'batch failed route=/queues/{{name}} error="two words" request_id=req-2 {fields}'
    )


@pytest.mark.parametrize("log_format", FORMATS)
def test_context_fields_end_with_their_block(output: io.StringIO, log_format: Format) -> None:
    configure(output, log_format)
    logger = logging.getLogger("app.test")
    with logs.log_context(stream="profile:events"):
        with logs.log_context(message_id="1-0"):
            logger.info("inner")
        logger.info("outer")
    logger.info("after")
    inner, outer, after = lines(output)
    assert "profile:events" in inner
    assert "1-0" in inner
    assert "profile:events" in outer
    assert "1-0" not in outer
    assert "profile:events" not in after


async def test_concurrent_tasks_keep_their_own_context(output: io.StringIO) -> None:
    configure(output, "json")
    logger = logging.getLogger("app.test")

    async def handle(request_id: str) -> None:
        with logs.log_context(request_id=request_id):
            await asyncio.sleep(0)
            logger.info("handled %s", request_id)

    await asyncio.gather(*(handle(f"r{i}") for i in range(20)))
    seen = json_lines(output)
    assert len(seen) == 20
    assert all(line["message"] == f"handled {line['request_id']}" for line in seen)


def test_an_extra_field_wins_over_the_context(output: io.StringIO) -> None:
    configure(output, "json")
    with logs.log_context(status="from-context"):
        logging.getLogger("app.test").info("x", extra={"status": 201})
    assert json_lines(output)[0]["status"] == 201


def test_the_level_comes_from_the_settings(output: io.StringIO) -> None:
    configure(output, "json", server={"log_level": "warning"})
    logger = logging.getLogger("app.test")
    logger.info("hidden")
    logger.warning("shown")
    assert [line["message"] for line in json_lines(output)] == ["shown"]


def test_a_forged_line_stays_inside_its_text_line(output: io.StringIO) -> None:
    configure(output, "text")
    forged = "x\n2025-01-01T00:00:00.000Z ERROR app.admin granted"
    logging.getLogger("app.test").info("profile %s not found", forged, extra={"path": forged})
    assert len(lines(output)) == 1


def test_exceptions_are_one_json_string_field(output: io.StringIO) -> None:
    configure(output, "json")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("app.test").exception("failed")
    [line] = json_lines(output)
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("ValueError: bad value")


@pytest.mark.parametrize("log_format", FORMATS)
def test_uvicorn_logs_through_the_service_handler(output: io.StringIO, log_format: Format) -> None:
    # As `python -m app serve` does: the service's logging first, then uvicorn's Config.
    configure(output, log_format)
    _uvicorn_config(ServeOptions(host="127.0.0.1", port=8000, workers=1, log_level="info"))
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "\x1b[36mcoloured\x1b[0m"}
    )
    logging.getLogger("uvicorn.access").info('127.0.0.1:1 - "GET / HTTP/1.1" 200')
    [line] = lines(output)
    assert "Started server process [42]" in line
    assert "uvicorn.error" in line
    assert "coloured" not in line


def test_configuring_again_replaces_the_handler(output: io.StringIO) -> None:
    configure(output, "text")
    configure(output, "json")
    logging.getLogger("app.test").info("once")
    assert json_lines(output) == [json_lines(output)[0]]


SECRET_URLS = [
    ("redis://user:hunter2-pw@10.0.0.1:6379/0", "redis://user:***@10.0.0.1:6379/0"),
    ("rediss://:hunter2-pw@cache.example.com:6380", "rediss://:***@cache.example.com:6380"),
    # Unencoded "@" and a quote in the password: the password runs to the last "@".
    ('redis://u:hun@ter2"pw@host:1', "redis://u:***@host:1"),
    ("redis://host:1/0?password=hunter2-pw&db=1", "redis://host:1/0?password=***&db=1"),
]


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize(("url", "shown"), SECRET_URLS)
def test_url_passwords_are_redacted_everywhere(
    output: io.StringIO, log_format: Format, url: str, shown: str
) -> None:
    configure(output, log_format)
    logger = logging.getLogger("app.test")
    logger.info(f"connecting to {url}")
    logger.info("connecting to %s", url)
    logger.info("connecting", extra={"url": url})
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        logger.exception("failed")
    text = output.getvalue()
    for secret in ("hunter2", "ter2", "pw@"):
        assert secret not in text
    if log_format == "json":
        seen = json_lines(output)
        assert [line["message"] for line in seen[:2]] == [f"connecting to {shown}"] * 2
        assert seen[2]["url"] == shown
        assert seen[3]["exc_info"].endswith(f"ConnectionError: cannot reach {shown}")
    else:
        assert text.count(shown) == 4


@pytest.mark.parametrize("log_format", FORMATS)
def test_configured_secrets_never_appear(output: io.StringIO, log_format: Format) -> None:
    key = "k" * 40
    configure(
        output,
        log_format,
        redis={"url": "redis://app:s3cr%40t-pass@127.0.0.1:1"},
        services={"customers": {"redis_url": "redis://customers-svc:cust0mer-pass@h:1"}},
        sessions={"secret_key": key},
    )
    logger = logging.getLogger("app.test")
    # Outside a URL, where only knowing the value finds it.
    logger.error("AUTH with %s failed", "s3cr@t-pass")
    logger.info("signing with %s", key)
    logger.error("AUTH as customers-svc with %s failed", "cust0mer-pass")
    text = output.getvalue()
    assert "s3cr" not in text
    assert key not in text
    assert "cust0mer" not in text
    assert text.count("***") == 3


def test_a_secret_with_a_quote_is_redacted_in_json_too(output: io.StringIO) -> None:
    key = 'quote"and\\backslash' * 2
    configure(output, "json", sessions={"secret_key": key})
    logging.getLogger("app.test").info("key %s", key)
    assert json_lines(output)[0]["message"] == "key ***"


def test_urls_without_password_are_left_alone() -> None:
    text = "redis://10.0.0.1:6379 ana@example.com http://host:8000/a@b"
    assert logs.redact(text) == text


@pytest.mark.parametrize("header", [b"test-abc-123", b"a" * 128, b"trace:1.2_3"])
def test_a_sane_request_id_is_kept(header: bytes) -> None:
    assert logs.request_id_from(header) == header.decode()


@pytest.mark.parametrize(
    "header",
    [None, b"", b"a" * 129, b"two words", b"line\nbreak", b"id\r\nX-Evil: 1", b"\xe9t\xe9"],
)
def test_an_insane_request_id_is_replaced(header: bytes | None) -> None:
    first, second = logs.request_id_from(header), logs.request_id_from(header)
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


async def test_every_line_of_a_request_carries_its_id(output: io.StringIO) -> None:
    configure(output, "json")

    async def profile(request: Request) -> PlainTextResponse:
        logging.getLogger("app.profiles").warning("slow read of %s", request.path_params["user"])
        return PlainTextResponse("ok")

    app = RequestContext(Starlette(routes=[Route("/profile/{user}", profile)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.get("/profile/ana", headers={"X-Request-ID": "test-abc-123"})
        other = await http.get("/profile/bob", headers={"X-Request-ID": "bad id"})
    assert answer.headers["x-request-id"] == "test-abc-123"
    new_id = other.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id)
    # httpx logs the client's side of each request too.
    seen = [line for line in json_lines(output) if line["logger"].startswith("app.")]
    assert [(line["logger"], line["request_id"]) for line in seen] == [
        ("app.profiles", "test-abc-123"),
        ("app.access", "test-abc-123"),
        ("app.profiles", new_id),
        ("app.access", new_id),
    ]
    access = seen[1]
    assert access["message"] == "request"
    assert (access["method"], access["route"], access["status"]) == ("GET", "/profile/{user}", 200)
    assert isinstance(access["duration_s"], float)


async def test_the_access_line_can_be_turned_off(output: io.StringIO) -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = RequestContext(Starlette(routes=[Route("/", ok)]))
    transport = httpx.ASGITransport(app=app)
    for access_log, expected in ((False, 0), (True, 1)):
        settings = Settings(logging={"format": "json", "access_log": access_log})
        logs.configure_logging(settings, output)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/")).status_code == 200
        found = [line for line in json_lines(output) if line["logger"] == "app.access"]
        assert len(found) == expected
        output.seek(0)
        output.truncate()


async def test_an_unexpected_error_is_answered_with_its_request_id(output: io.StringIO) -> None:
    configure(output, "json")

    async def broken(request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    # As create_app places it: inside the framework's last-resort error handler.
    app = Starlette(routes=[Route("/broken", broken)], middleware=[Middleware(RequestContext)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.get("/broken", headers={"X-Request-ID": "bug-42"})
    assert answer.status_code == 500
    assert answer.json() == {"message": "Internal server error"}
    assert answer.headers["x-request-id"] == "bug-42"
    error = next(line for line in json_lines(output) if line["logger"] == "app.errors")
    assert error["request_id"] == "bug-42"
    assert "RuntimeError: a bug" in error["exc_info"]
    access = next(line for line in json_lines(output) if line["logger"] == "app.access")
    assert (access["status"], access["request_id"]) == (500, "bug-42")
