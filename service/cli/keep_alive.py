"""uvicorn's httptools protocol, keeping HTTP/1.0 connections open when the client asks with `Connection: keep-alive`.

uvicorn closes every HTTP/1.0 connection after one response, whatever the client asked: a client such as `ab -k`
then pays a new connection (and the service an accept, a protocol and a transport) for every request.
"""

from __future__ import annotations

import asyncio

KEEP_ALIVE_HEADER = (b"connection", b"keep-alive")


def http_protocol() -> type[asyncio.Protocol] | str:
    """The protocol class for uvicorn.run(http=...); uvicorn's own choice where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415
    except ImportError:  # no httptools on this platform: h11, which keeps only HTTP/1.1 connections open
        return "auto"

    class KeepAliveHttpToolsProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            previous = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is None or cycle is previous:  # an upgrade: no request cycle of its own
                return
            # The cycle's task has not run yet: its response is still to be written.
            if self.scope["http_version"] == "1.0" and self.parser.should_keep_alive():
                cycle.keep_alive = True
                cycle.default_headers = [*cycle.default_headers, KEEP_ALIVE_HEADER]  # HTTP/1.0 says so explicitly

    return KeepAliveHttpToolsProtocol
