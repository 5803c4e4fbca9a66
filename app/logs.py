"""Logging: one line per record, as text or JSON, with context fields and without secrets.

``configure_logging`` gives the root logger one handler on stderr; uvicorn's loggers go through
it too. A record carries the context fields bound where it was made (``log_context``: the
request id of the request being served; the stream, group and consumer of a worker's batch),
plus its own ``extra`` fields. Every line passes through ``redact`` once formatted, so a URL's
password or the sessions secret key never reaches the output, whichever part of the record
(message, arguments, exception) carried it.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from app.config import Settings

# A client's X-Request-ID is kept when it is this sane; anything else gets a new id.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# The context fields of the running request or batch, added to every log record made in it.
CONTEXT: ContextVar[dict[str, Any]] = ContextVar("log_context", default={})  # noqa: B039

# What every LogRecord has: anything else on a record is a context or ``extra`` field.
# ``color_message`` is uvicorn's copy of the message with terminal colours.
STANDARD_ATTRS = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", (), None)),
        *RESERVED_ATTRS,
        "message",
        "asctime",
        "taskName",
        "color_message",
    }
)
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn's loggers: through the root handler, in the service's format. Its access log stays
# off: the service writes one line per request itself, with the request id (app.middleware).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
UVICORN_ACCESS_LOGGER = "uvicorn.access"
ACCESS_LOGGER = "app.access"

REDACTED = "***"
# scheme://user:password@host: the password runs to the last "@" before the host, as URL
# parsers read it; a "/" or a space ends the URL's authority.
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s/]*@")
# redis-py also takes the password as a query parameter: ...?password=secret. A JSON escape
# (\" inside a JSON line) is part of the value, not its end.
QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?:\\.|[^&\s\"\\])*")
# Secrets known by value are replaced wherever they occur; a shorter one would blank out common
# words (a URL's password is redacted whatever its length).
MIN_LITERAL_SECRET = 6


def request_id_from(header: bytes | None) -> str:
    """Return the client's request id when it sent a sane one, else a new one."""
    if header:
        text = header.decode("latin-1")
        if SANE_REQUEST_ID.fullmatch(text):
            return text
    # 128 random bits, as a UUID4 has, without its cost (an id, not a secret).
    return f"{random.getrandbits(128):032x}"


def bind(**fields: Any) -> Token[dict[str, Any]]:
    """Add ``fields`` to the log context of the running task; undo with ``CONTEXT.reset``."""
    return CONTEXT.set({**CONTEXT.get(), **fields})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log record made inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        CONTEXT.reset(token)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` without URL passwords and without any of ``secrets``."""
    if "@" in text:
        text = URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    if "password=" in text:
        text = QUERY_PASSWORD.sub(rf"\g<head>{REDACTED}", text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Return the secret values in ``settings`` that must never be logged, longest first."""
    found = {settings.sessions.secret_key.get_secret_value()}
    urls = [settings.redis.url, *(own.redis_url for own in settings.services.values())]
    for url in urls:
        password = urlsplit(url).password if url else None
        if password:
            found |= {password, unquote(password)}
    # As a JSON line writes them, should they hold a quote or a backslash.
    found |= {json.dumps(secret, ensure_ascii=False)[1:-1] for secret in found}
    # Longest first: a secret that contains another is replaced whole.
    return tuple(sorted((s for s in found if len(s) >= MIN_LITERAL_SECRET), key=len, reverse=True))


class ContextFilter(logging.Filter):
    """Add the fields of the running request or batch (``CONTEXT``) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for key, value in CONTEXT.get().items():
            # A field given to the call itself (``extra``) wins over the context.
            fields.setdefault(key, value)
        return True


class _UtcTime(logging.Formatter):
    """ISO 8601 times in UTC, to the millisecond: ``2025-01-31T12:00:00.123Z``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(_UtcTime):
    """One readable line: ``time level logger message key=value...``; exceptions follow."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(LINE_FORMAT)
        self.secrets = tuple(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        line = super().formatMessage(record)
        if "\n" in line or "\r" in line:
            # A value from a request cannot forge a second log line.
            line = line.replace("\r", "\\r").replace("\n", "\\n")
        fields = [
            f"{key}={_text_value(value)}"
            for key, value in record.__dict__.items()
            if key not in STANDARD_ATTRS and not key.startswith("_")
        ]
        return " ".join((line, *fields)) if fields else line

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class JsonFormatter(_UtcTime, BaseJsonFormatter):
    """One JSON object a line: time, level, logger, message, every context and extra field,
    and ``exc_info`` (the traceback, as one string) when there is an exception."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(
            LINE_FORMAT,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=sorted(STANDARD_ATTRS),
            # Not escaped to \uXXXX, so a secret with non-ASCII characters is still found.
            json_ensure_ascii=False,
        )
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def formatter_for(settings: Settings) -> logging.Formatter:
    """Return the formatter ``settings.logging.format`` names, redacting the settings' secrets."""
    secrets = secrets_of(settings)
    if settings.logging.format == "json":
        return JsonFormatter(secrets)
    return TextFormatter(secrets)


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Send every log record, uvicorn's included, to stderr in the configured format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(settings))
    # On the handler, not a logger: records propagated from any logger pass handler filters.
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for previous in root.handlers[:]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(settings.server.log_level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = False
    # The service's own access line (app.middleware.RequestContext asks this logger first).
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.NOTSET if settings.logging.access_log else logging.WARNING
    )
