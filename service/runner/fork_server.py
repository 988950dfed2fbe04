"""The service's side of the fork server (`exit_keeper --serve`; the protocol is in exit_keeper_serve.h).

One long-lived native process forks the exit keepers, many per message, and reports their exits in batches: the
event loop makes no vfork, opens no descriptor and watches no pidfd per attempt. It is spoken to through an
asyncio protocol on a socket pair, never with a blocking call. If it ends, the keepers it started carry on (they
need nothing from it once released) and are watched like adopted ones; a new server is started for the next
spawns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

logger = logging.getLogger(__name__)

# Little-endian, as the server reads them: u32 body length, kind, u32 id, u32 options, u32 arguments, u32 environment.
SPAWN_HEAD = struct.Struct("<IBIIII")
SETTLE_HEAD = struct.Struct("<IBI")
REPLY = struct.Struct("<B3xIiiQ")
STAGE_OUTPUT = 2
# Python ignores SIGPIPE and SIGXFSZ for itself; the server and its keepers expect the defaults.
RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
REAP_RETRY_SECONDS = 0.05
# The server only forks: a batch is answered within milliseconds. One that stays silent this long is frozen
# (SIGSTOP, a hung machine): it is ended, so that the claim loop never waits on it for ever.
DEFAULT_REPLY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """One keeper to fork: the same things the keeper's command line would say."""

    status_path: Path
    stdout_path: Path
    stderr_path: Path
    options: Sequence[str]
    argv: Sequence[str]
    environment: Mapping[str, str]

    def encode(self, request_id: int) -> bytes:
        strings = [
            os.fsencode(self.status_path),
            os.fsencode(self.stdout_path),
            os.fsencode(self.stderr_path),
            *(os.fsencode(option) for option in self.options),
            *(os.fsencode(argument) for argument in self.argv),
            *(os.fsencode(f"{name}={value}") for name, value in self.environment.items()),
        ]
        blob = b"\0".join(strings) + b"\0"
        head = SPAWN_HEAD.pack(
            SPAWN_HEAD.size - 4 + len(blob), ord("S"), request_id, len(self.options), len(self.argv),
            len(self.environment),
        )  # fmt: skip
        return head + blob


@dataclass(frozen=True, slots=True)
class Served:
    """A keeper the server forked: waiting for its go-ahead, in its own session."""

    request_id: int
    """What the server knows it by: unlike a pid, never reused while it matters."""
    pid: int
    start_ticks: int
    """Its start time in clock ticks since boot (/proc/<pid>/stat field 22); 0 if the server could not read it."""
    connection: ForkServerConnection
    exit_status: asyncio.Future[int | None]
    """Its wait status once the server reaped it; None if the server ended first (watch it another way)."""


@dataclass(frozen=True, slots=True)
class SpawnRefused:
    """Nothing was forked: `errno` says why, about the program or (`stage` 2) about the output files."""

    errno: int
    stage: int

    @property
    def about_output(self) -> bool:
        return self.stage == STAGE_OUTPUT


class ForkServerGoneError(Exception):
    """The server ended before it answered: the keeper was never started (or, forked in that moment, it can only
    exit abandoned, since its go-ahead went with the server)."""


class ForkServerConnection(asyncio.Protocol):
    """One life of the server process: its pending spawns, the exits it owes, the go-aheads to send."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._next_id = 0
        self._spawns: dict[int, asyncio.Future[Served | SpawnRefused]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._unread = b""
        self._outgoing: list[bytes] = []
        self._go_aheads: list[int] = []
        self._abandons: list[int] = []
        self._flush_scheduled = False

    @property
    def is_open(self) -> bool:
        return not self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio's, hence no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def spawn(self, requests: Iterable[SpawnRequest]) -> list[asyncio.Future[Served | SpawnRefused]]:
        """Queue the requests for one message; each future resolves with the keeper or the refusal."""
        futures = []
        for request in requests:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            future: asyncio.Future[Served | SpawnRefused] = self.loop.create_future()
            if self._closed:
                future.set_exception(ForkServerGoneError("the fork server had ended"))
            else:
                self._spawns[self._next_id] = future
                self._outgoing.append(request.encode(self._next_id))
            futures.append(future)
        self._schedule_flush()
        return futures

    def go_ahead(self, request_id: int) -> None:
        """Let the keeper run its program; sent with the others given in this turn of the loop."""
        self._go_aheads.append(request_id)
        self._schedule_flush()

    def abandon(self, request_id: int) -> None:
        """Close the keeper's go-ahead unwritten: it exits without running anything."""
        self._abandons.append(request_id)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for kind, request_ids in ((b"G", self._go_aheads), (b"A", self._abandons)):
            if request_ids:
                self._outgoing.append(SETTLE_HEAD.pack(5 + 4 * len(request_ids), kind[0], len(request_ids)))
                self._outgoing.append(struct.pack(f"<{len(request_ids)}I", *request_ids))
                request_ids.clear()
        if self._outgoing and self._transport is not None and not self._closed:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        unread = self._unread + data if self._unread else data
        whole = len(unread) - len(unread) % REPLY.size
        for kind, request_id, first, second, ticks in REPLY.iter_unpack(memoryview(unread)[:whole]):
            if kind == ord("X"):
                exit_future = self._exits.pop(first, None)
                if exit_future is not None and not exit_future.done():
                    exit_future.set_result(second)
                continue
            spawn_future = self._spawns.pop(request_id, None)
            if kind == ord("P"):
                if spawn_future is None or spawn_future.done():
                    self.abandon(request_id)  # nobody waits for it any more (a cancelled start): it must not run
                    continue
                exit_status: asyncio.Future[int | None] = self.loop.create_future()
                self._exits[first] = exit_status
                spawn_future.set_result(Served(request_id, first, ticks, self, exit_status))
            elif spawn_future is not None and not spawn_future.done():
                spawn_future.set_result(SpawnRefused(first, second))
        self._unread = unread[whole:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._spawns or self._exits:
            logger.warning(
                "the fork server (pid %d) ended with %d start(s) unanswered and %d keeper(s) running; those run on "
                "and are watched through pidfds",
                self.pid,
                len(self._spawns),
                len(self._exits),
            )
        for spawn_future in self._spawns.values():
            if not spawn_future.done():
                spawn_future.set_exception(ForkServerGoneError("the fork server ended before it started the keeper"))
        for exit_future in self._exits.values():
            if not exit_future.done():
                exit_future.set_result(None)
        self._spawns.clear()
        self._exits.clear()
        self._reap()

    def kill(self) -> None:
        """End a server that stopped answering: SIGKILL, then drop the connection (its pending starts fail with
        `ForkServerGoneError`; keepers forked meanwhile never get a go-ahead and exit abandoned)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self._transport is not None:
            self._transport.abort()
        else:
            self.connection_lost(None)

    def close(self) -> None:
        """Send what is queued (a go-ahead given in this very turn must not be lost), then end the connection."""
        if self._flush_scheduled:
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def _reap(self) -> None:
        """The server is our child: collect it once it has exited (its socket closes as it exits)."""
        try:
            reaped, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if reaped == 0:
            self.loop.call_later(REAP_RETRY_SECONDS, self._reap)


class ForkServer:
    """Starts the server on first use and again whenever it has ended; `close()` ends it."""

    def __init__(self, command: Sequence[str], *, reply_timeout_seconds: float = DEFAULT_REPLY_TIMEOUT_SECONDS) -> None:
        self._command = list(command)
        self._reply_timeout_seconds = reply_timeout_seconds
        self._connection: ForkServerConnection | None = None

    async def spawn(self, requests: Sequence[SpawnRequest]) -> list[Served | SpawnRefused | ForkServerGoneError]:
        """Fork a keeper per request, all in one message; results in the order of the requests. A server that
        does not answer within the reply timeout is ended, and its unanswered starts are `ForkServerGoneError`."""
        connection = await self._connected()
        pending = connection.spawn(requests)
        # asyncio.wait, not a timeout around gather: the futures must not be cancelled, only failed by the kill.
        _, unanswered = await asyncio.wait(pending, timeout=self._reply_timeout_seconds)
        if unanswered:
            logger.error(
                "the fork server (pid %d) left %d start(s) unanswered for %g s; ending it and starting another",
                connection.pid,
                len(unanswered),
                self._reply_timeout_seconds,
            )
            connection.kill()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        results: list[Served | SpawnRefused | ForkServerGoneError] = []
        for outcome in outcomes:
            if isinstance(outcome, Served | SpawnRefused | ForkServerGoneError):
                results.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return results

    async def _connected(self) -> ForkServerConnection:
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None and connection.is_open and connection.loop is loop:
            return connection
        if connection is not None and connection.is_open:
            connection.close()  # made on another event loop (tests): of no use on this one
        pid, ours = self._spawn_server()
        _, connection = await loop.create_unix_connection(lambda: ForkServerConnection(pid, loop), sock=ours)
        if self._connection is not None:
            logger.info("started a new fork server (pid %d)", pid)
        self._connection = connection
        return connection

    def _spawn_server(self) -> tuple[int, socket.socket]:
        """posix_spawn: a vfork and an exec, once per life of the server, not per keeper."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.posix_spawn(
                self._command[0],
                [*self._command, "--serve"],
                {},  # the server needs no environment; each keeper gets its program's from its request
                file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 0)],
                setsid=True,  # a Ctrl-C or hang-up meant for the service does not end it
                setsigdef=RESET_SIGNALS,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, ours

    async def close(self) -> None:
        """End the server: keepers still waiting for a go-ahead exit abandoned, the others run on."""
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            connection.close()
            with contextlib.suppress(ChildProcessError):
                for _ in range(100):
                    if os.waitpid(connection.pid, os.WNOHANG)[0]:  # noqa: ASYNC222  (WNOHANG never blocks)
                        break
                    await asyncio.sleep(REAP_RETRY_SECONDS / 5)
