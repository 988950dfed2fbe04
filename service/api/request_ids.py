"""Every request gets an id: the client's X-Request-ID when it is a sane one, else a new one. It is sent back in
the response's X-Request-ID header and is on every log line the request causes."""

from __future__ import annotations

import itertools
import os
import re

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import current_request_id

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
# A new id is this process's random prefix and a count: unique without a system call per request (the ids
# identify requests in logs; nothing relies on their being unguessable).
_PROCESS_PREFIX = os.urandom(8).hex()
_request_counter = itertools.count(1)
# Visible ASCII only, and short: the id is copied into every log line and into a response header.
_ACCEPTED_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name.lower() == _REQUEST_ID_HEADER_BYTES:
            given = value.decode("latin-1")
            if _ACCEPTED_REQUEST_ID.fullmatch(given):
                return given
            break
    return f"{_PROCESS_PREFIX}{next(_request_counter):016x}"  # 32 hex digits, like a UUID's


def request_ids(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: sets the request id for the request's task (and what it starts) and answers with it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != _REQUEST_ID_HEADER_BYTES
                ]
                headers.append((_REQUEST_ID_HEADER_BYTES, request_id.encode()))
                message["headers"] = headers
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)

    return middleware
