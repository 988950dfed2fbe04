"""PostgreSQL LISTEN/NOTIFY: how one node tells the others that a job is waiting, or that a cancel was asked for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import asyncpg

from service.db.engine import DEFAULT_CONNECT_TIMEOUT_SECONDS, libpq_url

# Sent (by submit_job, in the job's own transaction) whenever a job becomes due. The payload is empty: a woken
# supervisor claims whatever is due, so nothing is lost when notifications are coalesced.
JOBS_DUE_CHANNEL = "jobmanager_jobs_due"
# Sent (by cancel_job, in its own transaction) when a running job is to be cancelled. The payload names the node
# that runs the attempt; every woken node asks the database which of its own attempts to end, so nothing depends on
# the payload or on one notification arriving.
CANCEL_REQUESTED_CHANNEL = "jobmanager_cancel_requested"


def _terminate_if_connected(connecting: asyncio.Future[asyncpg.Connection]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().terminate()


class NotificationConnection:
    """A dedicated connection that LISTENs on channels and calls the channel's callback for each notification."""

    def __init__(self, connection: asyncpg.Connection, timeout_seconds: float) -> None:
        self._connection = connection
        self._timeout_seconds = timeout_seconds

    @classmethod
    async def open(
        cls,
        database_url: str,
        callbacks: Mapping[str, Callable[[], None]],
        on_lost: Callable[[], None],
        *,
        timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    ) -> NotificationConnection:
        """Connect and LISTEN; a server that does not answer within `timeout_seconds` (per step) raises."""
        # No statement_timeout: LISTEN holds an idle session, and its few statements are bounded by the client.
        connecting = asyncio.ensure_future(
            asyncpg.connect(libpq_url(database_url), timeout=timeout_seconds, command_timeout=timeout_seconds)
        )
        try:
            connection = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # Wait for the connect (it is bounded by its timeout) and close what it opened: one abandoned half-open
            # would outlive the event loop, and be collected later, unclosed.
            connecting.add_done_callback(_terminate_if_connected)
            with contextlib.suppress(BaseException):
                await connecting
            raise

        def _notified(_connection: object, _pid: int, channel: str, _payload: str) -> None:
            callbacks[channel]()

        def _terminated(_connection: object) -> None:
            on_lost()

        try:
            for channel in callbacks:
                await connection.add_listener(channel, _notified)
        except BaseException:
            connection.terminate()  # cancelled (a quick shutdown) or failed half-way: never leak the connection
            raise
        connection.add_termination_listener(_terminated)
        return cls(connection, timeout_seconds)

    @property
    def is_closed(self) -> bool:
        return bool(self._connection.is_closed())

    async def check(self) -> None:
        """Raise if the server is unreachable (a dead connection does not always notice by itself)."""
        await self._connection.execute("SELECT 1", timeout=self._timeout_seconds)

    async def close(self) -> None:
        try:
            await self._connection.close(timeout=5)
        except BaseException:
            self._connection.terminate()
            raise
