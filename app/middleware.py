"""ASGI middleware of the service."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs
from app.errors import unexpected_error
from app.metrics import (
    HTTP_DURATION,
    HTTP_IN_PROGRESS,
    HTTP_REQUESTS,
    UNMATCHED,
    HistogramTally,
    Tally,
    status_class,
)
from app.redis import REQUEST_STARTED

access_logger = logging.getLogger(logs.ACCESS_LOGGER)

REQUEST_ID_HEADER = b"x-request-id"
# Any other method is counted as "other", so a client cannot invent label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestContext:
    """Give every request an id, count and time it, and log one line when it is answered.

    The id is the client's ``X-Request-ID`` when it is sane (``app.logs.request_id_from``),
    else a new one; the response echoes it and every log record made while serving the request
    carries it. An error no handler expected is answered here as the JSON 500, so that answer
    and its log line carry the id too. The metrics are labelled by the route template the
    router matched (``/profile/{user}``), never by the raw path, so their label values stay
    bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Tallies by (method, route, status), made on first use (app.metrics: a request counts
        # into plain numbers, added to the metrics in bulk).
        self._tallies: dict[tuple[str, str, int], tuple[Tally, HistogramTally]] = {}
        self._in_progress: dict[str, Tally] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        started_token = REQUEST_STARTED.set(time.monotonic())
        request_id = logs.request_id_from(_header(scope, REQUEST_ID_HEADER))
        method = scope["method"] if scope["method"] in METHODS else "other"
        # A request starts with no context of its own: nothing to merge.
        token = logs.CONTEXT.set({"request_id": request_id})
        status = 0
        echoed = (REQUEST_ID_HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = Tally(HTTP_IN_PROGRESS.labels(method))
        in_progress.pending += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:  # the answer had begun: nothing else can be sent
                raise
            # Answered here, not by the framework's last-resort handler outside this
            # middleware: the 500 carries the request id, and so does its log line.
            await unexpected_error(scope["method"], scope["path"], exc)(
                scope, receive, send_with_id
            )
        finally:
            in_progress.pending -= 1
            status = status or 500
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            tallies = self._tallies.get((method, route, status))
            if tallies is None:
                labels = (method, route, status_class(status))
                tallies = self._tallies[method, route, status] = (
                    Tally(HTTP_REQUESTS.labels(*labels)),
                    HistogramTally(HTTP_DURATION.labels(*labels)),
                )
            tallies[0].pending += 1
            tallies[1].observe(elapsed)
            # logging.access_log = false raises this logger's level (app.logs).
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_s": round(elapsed, 6),
                    },
                )
            logs.CONTEXT.reset(token)
            REQUEST_STARTED.reset(started_token)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _route_template(scope: Scope) -> str:
    """Return the path template of the route that served the request, or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with a JSON 413 before the app reads them.

    A declared ``Content-Length`` is checked at once; a body without one (chunked) is read here,
    up to the limit, and handed to the app from memory.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # Chunked wins over a declared length (RFC 9112 6.3), so it is counted, never trusted.
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body.extend(message.get("body", b""))
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(
            {"message": f"Request body is larger than {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    queued = list(messages)

    async def replay() -> Message:
        if queued:
            return queued.pop(0)
        return await receive()

    return replay
