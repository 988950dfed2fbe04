"""A lean HTTP/1.1 keep-alive client for the load generators: one request in flight per connection.

httpx spends about 0.8 ms of CPU per request (about 1,200 requests/s per core on this machine): on a 2-core machine
the load generator would take the core the service needs, and the benchmarks would measure the client. This one
writes a request in one `write()` and parses just the status line and Content-Length of the answer: a tenth of
that CPU. It speaks only what the service answers (Content-Length bodies, no chunked encoding); anything else is
an error, never a silent misreading.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"


class HttpError(Exception):
    """The connection failed, or the answer was not an HTTP/1.1 response this client understands."""


class _ResponseParser(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: Exception | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = HttpError(f"connection closed: {exc}" if exc else "connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def expect(self) -> asyncio.Future[tuple[int, bytes]]:
        if self._lost is not None:
            raise self._lost
        self._waiter = asyncio.get_running_loop().create_future()
        self._complete()
        return self._waiter

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        head_end = self._buffer.find(HEADER_END)
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).lower()
        try:
            status = int(head[9:12])
            length_at = head.index(CONTENT_LENGTH) + len(CONTENT_LENGTH)
            line_end = head.find(b"\r\n", length_at)
            length = int(head[length_at : line_end if line_end >= 0 else len(head)])
        except ValueError:
            waiter.set_exception(HttpError(f"unexpected response head: {head[:200]!r}"))
            return
        body_start = head_end + len(HEADER_END)
        if len(self._buffer) < body_start + length:
            return
        body = bytes(self._buffer[body_start : body_start + length])
        del self._buffer[: body_start + length]
        self._waiter = None
        waiter.set_result((status, body))


class HttpConnection:
    """One keep-alive connection; `request()` calls must not overlap (closed-loop load)."""

    def __init__(self, host: str, parser: _ResponseParser) -> None:
        self._host = host
        self._parser = parser

    @classmethod
    async def open(cls, base_url: str) -> HttpConnection:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        _, parser = await asyncio.get_running_loop().create_connection(_ResponseParser, host, port)
        return cls(f"{host}:{port}", parser)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and return the answer's status and body."""
        transport = self._parser.transport
        if transport is None or transport.is_closing():
            raise HttpError("connection closed")
        head = f"{method} {path} HTTP/1.1\r\nhost: {self._host}\r\n"
        if body is not None:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        answer = self._parser.expect()
        transport.write(head.encode() + b"\r\n" + (body or b""))
        return await answer

    def close(self) -> None:
        if self._parser.transport is not None:
            self._parser.transport.close()
