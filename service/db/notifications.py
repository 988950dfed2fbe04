"""PostgreSQL LISTEN/NOTIFY: how one node tells the others that a job is waiting to be claimed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from service.db.engine import libpq_url

# Sent (by submit_job, in the job's own transaction) whenever a job becomes due. The payload is empty: a woken
# supervisor claims whatever is due, so nothing is lost when notifications are coalesced.
JOBS_DUE_CHANNEL = "jobmanager_jobs_due"


def _terminate_if_connected(connecting: asyncio.Future[asyncpg.Connection]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().terminate()


class NotificationConnection:
    """A dedicated connection that LISTENs on one channel and calls `on_notify` for each notification."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(
        cls, database_url: str, channel: str, on_notify: Callable[[], None], on_lost: Callable[[], None]
    ) -> NotificationConnection:
        connecting = asyncio.ensure_future(asyncpg.connect(libpq_url(database_url)))
        try:
            connection = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # Let the connect finish on its own and close what it opens, rather than abandon it half-open.
            connecting.add_done_callback(_terminate_if_connected)
            raise

        def _notified(_connection: object, _pid: int, _channel: str, _payload: str) -> None:
            on_notify()

        def _terminated(_connection: object) -> None:
            on_lost()

        try:
            await connection.add_listener(channel, _notified)
        except BaseException:
            connection.terminate()  # cancelled (a quick shutdown) or failed half-way: never leak the connection
            raise
        connection.add_termination_listener(_terminated)
        return cls(connection)

    @property
    def is_closed(self) -> bool:
        return bool(self._connection.is_closed())

    async def check(self) -> None:
        """Raise if the server is unreachable (a dead connection does not always notice by itself)."""
        await self._connection.execute("SELECT 1")

    async def close(self) -> None:
        try:
            await self._connection.close(timeout=5)
        except BaseException:
            self._connection.terminate()
            raise
