"""A small TCP proxy between one node and PostgreSQL, which a test cuts and restores: a partition from the
database without root or network namespaces. Cutting closes every relayed connection and stops listening (the node
sees its connections fail and new ones refused); restoring listens again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
RELAY_CHUNK_BYTES = 65536
CONTROL_SECONDS = 10.0
SETTLE_ROUNDS = 3


class TcpProxy:
    """Relays 127.0.0.1:`port` to `target_host`:`target_port` (or to the Unix socket `target_host` names when it is
    a path: the embedded PostgreSQL listens on one only), on an event loop in a thread of its own."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=CONTROL_SECONDS)

    def start(self) -> None:
        self._call(self._start())

    def cut(self) -> None:
        """Close every relayed connection and stop accepting new ones."""
        self._call(self._cut())

    def close(self) -> None:
        self._call(self._cut())
        self._call(self._settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONTROL_SECONDS)
        self._loop.close()

    async def _settle(self) -> None:
        """Let the aborted transports finish closing (their last callbacks run on the loop), and any connection
        accepted meanwhile be relayed to its end, before the loop stops."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
        await self._cut()
        await asyncio.sleep(0)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        host, port = self._target
        try:
            if host.startswith("/"):
                server_reader, server_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections.update({client_writer, server_writer})
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            relay = asyncio.ensure_future(self._relay(reader, writer))
            self._relays.add(relay)
            relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(RELAY_CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
