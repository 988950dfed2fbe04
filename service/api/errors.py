"""Every error leaves as RFC 9457 problem details naming the field at fault; none leaves as a bare 500."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from service.api.messages import sentence
from service.db.errors import describe, is_transient

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `(?P<name>[^`]+)`")
# The names Litestar and msgspec give the request body as a whole.
_WHOLE_BODY_KEYS = ("", "data", "$")


class FieldErrorRead(msgspec.Struct):
    field: str
    """As the client wrote it: `arguments[3]`, `createdAfter`, `Idempotency-Key`."""
    message: str
    source: str
    """body, query, path or header."""


class ProblemRead(msgspec.Struct):
    """RFC 9457 problem details, as every error is sent (for the OpenAPI document)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldErrorRead] | None = None


def problem_response(description: str) -> ResponseSpec:
    """An error response of a route, documented in OpenAPI as problem details."""
    return ResponseSpec(
        data_container=ProblemRead, description=description, media_type=PROBLEM_JSON, generate_examples=False
    )


class ProblemError(HTTPException):
    """An error the service raises on purpose; it becomes a problem-details response."""

    def __init__(
        self,
        *,
        status_code: int,
        detail: str,
        field_errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.field_errors = field_errors or []


def _problem(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str,
    errors: list[dict[str, str]],
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = errors
    return Response(content=body, status_code=status_code, media_type=PROBLEM_JSON, headers=headers)


def _field_path(key: str) -> str:
    """`$.arguments[3]` or `arguments.3` → `arguments[3]`: the way a user writes the field; `body` for all of it."""
    if key in _WHOLE_BODY_KEYS:
        return "body"
    key = key.removeprefix("$.").removeprefix("data.")
    return re.sub(r"\.(\d+)", r"[\1]", key)


def _camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _source_name(source: object) -> str:
    """Litestar gives a ParamType enum for query and path parameters, and a plain string for the body."""
    return str(getattr(source, "value", source))


def _wire_name(request: Request[Any, Any, Any], key: str, source: str) -> str:
    """Litestar names a parameter by its argument (`last_event_id`); the client knows it by its wire name
    (`Last-Event-ID`, `createdAfter`)."""
    if source not in ("query", "header", "path"):
        return _field_path(key)
    parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    definition = getattr(parameter, "kwarg_definition", None)
    for alias in (getattr(definition, source, None), getattr(definition, "name", None)):
        if isinstance(alias, str) and alias:
            return alias
    return _camel_case(key) if source == "query" else key


def _sent_value(request: Request[Any, Any, Any], field: str, source: str) -> object:
    """What the client sent for a parameter, to say in the message how far off it is."""
    if source == "query":
        return request.query_params.get(field)
    if source == "path":
        return request.path_params.get(field)
    if source == "header":
        return request.headers.get(field)
    return None


def _validation_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[dict[str, str]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key", ""))
        # msgspec puts the precise path at the end of its message; prefer it to the coarser key.
        match = _MSGSPEC_PATH.search(message)
        if match:
            key = match.group("path")
            message = message[: match.start()]
        # msgspec names an unknown or a missing field in the message and points at the object that holds it.
        named = _UNKNOWN_FIELD.search(message) or _MISSING_FIELD.search(message)
        if named:
            key = f"{key}.{named.group('name')}" if key not in _WHOLE_BODY_KEYS else named.group("name")
        source = _source_name(item.get("source", "body"))
        field = _wire_name(request, key, source)
        if key == "data" and message == "'data'":
            # Litestar's KeyError when there is no body at all (empty, or JSON null).
            message = "the body must be a JSON object"
        else:
            message = sentence(field, message, _sent_value(request, field, source))
        errors.append({"field": field, "message": message, "source": source})
    return errors


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        logger.error("server error on %s %s", request.method, request.url.path, exc_info=exc)
    headers = dict(exc.headers or {})
    if isinstance(exc, ProblemError):
        return _problem(request, exc.status_code, exc.detail, exc.field_errors, headers)
    if isinstance(exc, ValidationException):
        errors = _validation_errors(request, exc)
        detail = "; ".join(e["message"] for e in errors) or exc.detail
        return _problem(request, exc.status_code, detail, errors)
    if isinstance(exc.__cause__, SerializationException):
        # A body that is not JSON at all: Litestar wraps the decoder's error in a plain 400.
        detail = f"the body is not valid JSON: {exc.detail}"
        return _problem(request, exc.status_code, detail, [{"field": "body", "message": detail, "source": "body"}])
    if exc.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"the request body is larger than the limit of {limit} bytes"
        return _problem(request, exc.status_code, detail, [{"field": "body", "message": detail, "source": "body"}])
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = headers.get("allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"
        return _problem(request, exc.status_code, detail, [], headers)
    return _problem(request, exc.status_code, exc.detail, [], headers)


def handle_unexpected_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(request, 500, "an unexpected error occurred; it has been logged", [])


# The database is unreachable, restarting or hung: a client should come back after this many seconds.
DATABASE_RETRY_AFTER_SECONDS = 5


def handle_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """503 with Retry-After for a failure that may pass (DatabaseUnavailableError, or a transient error raised
    through the engine directly); anything else from the database is a 500 like any unexpected error."""
    if not is_transient(exc):
        return handle_unexpected_exception(request, exc)
    reason = describe(exc)
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    response = _problem(
        request,
        HTTPStatus.SERVICE_UNAVAILABLE,
        f"the database is unavailable ({reason.split(':')[0]}); try again in {DATABASE_RETRY_AFTER_SECONDS} s",
        [],
    )
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


__all__ = [
    "PROBLEM_JSON",
    "MediaType",
    "ProblemError",
    "ProblemRead",
    "handle_http_exception",
    "handle_unexpected_exception",
    "problem_response",
]
