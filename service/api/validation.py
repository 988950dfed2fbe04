"""Checks shared by the controllers: the JSON body before it is decoded, query parameters, text and instants."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from service.api.errors import ProblemError
from service.api.messages import sentence
from service.api.schemas import MAX_JOB_NAME_LENGTH, JobCreate
from service.domain.timestamps import as_utc, instant_problem

MAX_JSON_DEPTH = 8
"""Arrays and objects nested deeper than this are refused before the decoder recurses into them."""
MEBIBYTE = 1024 * 1024
MAX_REQUEST_BODY_BYTES = 5 * MEBIBYTE
"""The largest valid job (256 arguments of 4096 characters, each at most 4 bytes of UTF-8) fits with room."""
MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 16 * 1024
"""Names and values together; h11 allows about as much for the whole head, httptools sets no limit of its own."""
QUERY_PARAMETERS_STATE_KEY = "query_parameters"
# Characters no name may hold: C0 controls, DEL, C1 controls, and the bidirectional overrides and isolates that
# make a name display as something else.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_SQUARE_BRACKETS = bytes.maketrans(b"{}", b"[]")
_OPENING = ord("[")
_MALFORMED_PREFIX = "JSON is malformed: "


def _problem(field: str, message: str, source: str, status_code: int = 400) -> ProblemError:
    return ProblemError(
        status_code=status_code, detail=message, field_errors=[{"field": field, "message": message, "source": source}]
    )


def json_nesting_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in `raw` nest deeper than `limit`, found without recursion.

    Strings are dropped first (a bracket inside one is text) and `{}` read as `[]`. Each pass removes the innermost
    pairs, one level, so `limit` passes empty any well-formed document no deeper than `limit`: the common case costs
    a few byte replacements. Only what is left that way is counted bracket by bracket.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(_SQUARE_BRACKETS, _NOT_BRACKETS)
    remainder = brackets
    for _ in range(limit):
        if not remainder:
            return False
        remainder = remainder.replace(b"[]", b"")
    if not remainder:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte == _OPENING else -1
        if depth > limit:
            return True
        if depth < 0:
            return False  # not JSON: the decoder says so
    return False


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _problem(key, f"{key} appears twice in one JSON object; give each field once", "body")
        seen.add(key)
    return dict(pairs)


def _malformed(error: msgspec.DecodeError) -> ProblemError:
    reason = str(error)
    if reason == "Input data was truncated":
        reason = "it ends before its JSON value is complete"
    return _problem("body", f"the body is not valid JSON: {reason.removeprefix(_MALFORMED_PREFIX)}", "body")


def _value_at(document: Any, field: str) -> Any:  # noqa: ANN401  (any decoded JSON value)
    """The value the client sent at `field` (`arguments[3]`), or None when there is none."""
    current = document
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        try:
            current = current[name] if name else current[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return current


def _field_of(message: str) -> tuple[str, str]:
    """msgspec's `... - at `$.arguments[3]`` split into the field and the message."""
    match = re.search(r" - at `\$\.?(?P<path>[^`]*)`$", message)
    if match is None:
        named = re.search(r"field `(?P<name>[^`]+)`", message)
        return (named["name"] if named else "body"), message
    path = match["path"] or "body"
    named = re.search(r"field `(?P<name>[^`]+)`", message)
    if named:
        path = f"{path}.{named['name']}" if path != "body" else named["name"]
    return path, message[: match.start()]


def decode_job_create(raw: bytes) -> JobCreate:
    """The body of POST /jobs, strictly: no nesting past MAX_JSON_DEPTH, no repeated key, no "10" for a number,
    no instant outside the window; every refusal a ProblemError naming the field and the limit."""
    if json_nesting_exceeds(raw):
        raise _problem("body", f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels", "body")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise _malformed(error) from None
    json.loads(raw, object_pairs_hook=_refuse_duplicates)
    try:
        job = msgspec.json.decode(raw, type=JobCreate, strict=True)
    except msgspec.ValidationError as error:
        field, message = _field_of(str(error))
        raise _problem(field, sentence(field, message, _value_at(document, field)), "body") from None
    if job.run_at is not None and (problem := instant_problem(job.run_at)):
        raise _problem("runAt", f"runAt {problem}", "body")
    return job


async def validate_job_body(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """A guard: refuses a body that is not declared as JSON, then checks the body before Litestar decodes it."""
    media_type = connection.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ProblemError(
            status_code=415,
            detail=f"Content-Type must be application/json, not {media_type or 'missing'}",
            field_errors=[{"field": "Content-Type", "message": "must be application/json", "source": "header"}],
        )
    if isinstance(connection, Request):
        # Litestar decodes the body again for the handler, leniently; what passes here passes there unchanged.
        decode_job_create(await connection.body())


def _refuse_oversized_headers(scope: HTTPScope) -> None:
    """431 past MAX_HEADER_COUNT headers or MAX_HEADER_BYTES of them."""
    raw_headers = list(scope["headers"])
    size = sum(len(name) + len(value) for name, value in raw_headers)
    if len(raw_headers) > MAX_HEADER_COUNT or size > MAX_HEADER_BYTES:
        raise ProblemError(
            status_code=431,
            detail=(
                f"the request has {len(raw_headers)} headers of {size} bytes; the limits are {MAX_HEADER_COUNT} "
                f"headers and {MAX_HEADER_BYTES} bytes"
            ),
        )


def known_query_parameters(routes: Iterable[object]) -> dict[object, frozenset[str]]:
    """Each route handler's query parameters by their wire names, keyed by the handler's function, from Litestar's
    own reading of the handlers' signatures."""
    known: dict[object, frozenset[str]] = {}
    for route in routes:
        for handler, kwargs_model in getattr(route, "route_handler_map", {}).values():
            known[handler.fn] = frozenset(parameter.field_alias for parameter in kwargs_model.expected_query_params)
    return known


def _refuse_unknown_query_parameters(scope: HTTPScope) -> None:
    """A misspelt parameter (`?stauts=running`) is refused, not silently ignored."""
    query_string = scope.get("query_string")
    if not query_string:
        return
    known_by_handler: dict[object, frozenset[str]] = scope["app"].state.get(QUERY_PARAMETERS_STATE_KEY, {})
    known = known_by_handler.get(getattr(scope.get("route_handler"), "fn", None), frozenset())
    # Read as Litestar reads them for the handler (no blank values, `&` only).
    unknown = sorted({name for name, _ in parse_qsl(query_string.decode("latin-1"), separator="&")} - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ProblemError(
            status_code=400,
            detail=f"unknown query parameter {', '.join(unknown)}; this route takes {allowed}",
            field_errors=[
                {"field": name, "message": f"{name} is not a query parameter of this route", "source": "query"}
                for name in unknown
            ],
        )


def request_head_checks(app: ASGIApp) -> ASGIApp:
    """ASGI middleware, after routing: the size of the headers, then the names of the query parameters.

    A middleware rather than guards: Litestar runs a plain function guard in a worker thread, and hands every guard
    a copy of the route handler, on every request.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            _refuse_oversized_headers(scope)
            _refuse_unknown_query_parameters(scope)
        await app(scope, receive, send)

    return middleware


def checked_instant(field: str, moment: datetime | None) -> datetime | None:
    """A query parameter's instant in UTC (UTC when it has no offset), or a 400 when it is outside the window."""
    if moment is None:
        return None
    problem = instant_problem(moment)
    if problem:
        raise _problem(field, f"{field} {problem}", "query")
    return as_utc(moment)


def checked_name_prefix(field: str, value: str | None) -> str | None:
    """A job name filter: no character a job name cannot hold (PostgreSQL would refuse a NUL outright)."""
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise _problem(field, sentence("jobName", "matching regex").replace("jobName", field, 1), "query")
    if value is not None and len(value) > MAX_JOB_NAME_LENGTH:
        raise _problem(field, f"{field} is {len(value)} characters; the limit is {MAX_JOB_NAME_LENGTH}", "query")
    return value


def checked_program_name(field: str, value: str | None) -> str | None:
    """A program filter names a program as a job does; any other text could match nothing."""
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise _problem(field, f"{field} must not contain control characters", "query")
    return value
