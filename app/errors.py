"""Domain errors and the handlers that turn every failure into a JSON answer.

Every error body has a ``message``; validation errors add ``errors``, one entry per problem with
where it is (``loc``) and what is wrong (``msg``).
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class AppError(Exception):
    """A failure with a meaning for the client: the status code and message to answer with."""

    status_code: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StartupRefused(RuntimeError):
    """The service must not start on what it found (data it cannot serve); the message is one
    line saying what to do."""


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class PreconditionFailed(AppError):
    """The client's If-Match names a version that is no longer the current one."""

    status_code = 412


class ServiceUnavailable(AppError):
    """Redis cannot be reached even after the retry policy's attempts."""

    status_code = 503


def _describe(error: dict[str, Any]) -> str:
    loc = [str(item) for item in error.get("loc", ())]
    kind = error.get("type")
    if kind == "json_invalid":
        position = loc[1] if len(loc) > 1 else "?"
        return f"Request body is not valid JSON (error at character {position})"
    if loc == ["body"] and kind in {"dict_type", "model_type", "model_attributes_type", "missing"}:
        return "Request body must be a JSON object"
    message = error.get("msg", "invalid")
    if len(loc) > 1 and loc[0] == "body":
        return f"Invalid body field '{'.'.join(loc[1:])}': {message}"
    if len(loc) > 1:
        return f"Invalid {loc[0]} parameter '{'.'.join(loc[1:])}': {message}"
    return f"Invalid {'.'.join(loc) or 'request'}: {message}"


# Problems named in the message; the ``errors`` list always holds them all.
MAX_PROBLEMS_NAMED = 10


def _validation_message(errors: list[dict[str, Any]]) -> str:
    named = "; ".join(_describe(error) for error in errors[:MAX_PROBLEMS_NAMED])
    hidden = len(errors) - MAX_PROBLEMS_NAMED
    return named + (f" (and {hidden} more problems)" if hidden > 0 else "")


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, ServiceUnavailable) else None
    return JSONResponse({"message": exc.message}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")).removeprefix("Value error, "),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"message": _validation_message(errors), "errors": errors}, status_code=422)


# FastAPI's answer when reading a body raised something other than a JSON syntax error: for
# JSON, Python refuses integers of more than 4300 digits (reading them costs quadratic time).
_UNPARSABLE_BODY = "There was an error parsing the body"


def _allowed_methods(request: Request) -> str:
    """Return the methods the OpenAPI schema gives the request's path, for ``Allow``.

    Starlette's router names only the methods of the route that matched the path last, while
    a path such as ``/customers/{customer_id}`` has a route per method: the schema has them all.
    """
    table: list[tuple[re.Pattern[str], str]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (compile_path(path)[0], ", ".join(sorted(method.upper() for method in operations)))
            for path, operations in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    path = request.url.path
    return next((methods for pattern, methods in table if pattern.match(path)), "")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return JSONResponse(
            {"message": str(exc.detail)},
            status_code=405,
            headers={"Allow": _allowed_methods(request)},
        )
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return JSONResponse(
            {"message": "Request body could not be parsed (JSON numbers may have 4300 digits)"},
            status_code=422,
        )
    if exc.status_code == 400:
        # The routes raise domain errors, never HTTPException: a 400 is the framework refusing
        # a body it cannot read (a multipart form without a valid boundary), which the schema
        # documents as 422 like every other body that breaks it.
        return JSONResponse(
            {"message": f"Request body could not be parsed: {exc.detail}"}, status_code=422
        )
    return JSONResponse(
        {"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def unexpected_error(method: str, path: str, exc: BaseException) -> JSONResponse:
    """Log an error no handler expected (with its traceback) and return the 500 answer."""
    logger.error("unhandled error: method=%s path=%s", method, path, exc_info=exc)
    return JSONResponse({"message": "Internal server error"}, status_code=500)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Only for errors outside app.middleware.RequestContext, which answers the others itself.
    return unexpected_error(request.method, request.url.path, exc)


def register_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and anything unexpected to JSON answers."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
