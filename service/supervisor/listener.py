"""Wakes this node's supervisor when any node submits a job or asks for a cancel, so nobody waits for a poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.db.engine import DEFAULT_CONNECT_TIMEOUT_SECONDS
from service.db.notifications import CANCEL_REQUESTED_CHANNEL, JOBS_DUE_CHANNEL, NotificationConnection

logger = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY_SECONDS = 0.5
RECONNECT_MAX_DELAY_SECONDS = 30.0
# A LISTEN connection can die silently (a network cut); checking it this often bounds how long that goes unseen.
HEALTH_CHECK_SECONDS = 30.0


class DueJobListener:
    """Keeps a LISTEN connection open, reconnecting after failures; `run_once()` connects and listens until lost.

    Missing a notification costs at most one poll interval: the supervisor's poll remains the safety net.
    """

    def __init__(
        self,
        database_url: str,
        on_due: Callable[[], None],
        *,
        on_cancel_requested: Callable[[], None] | None = None,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._connect_timeout_seconds = connect_timeout_seconds
        self._database_url = database_url
        self._on_due = on_due
        self._on_cancel_requested = on_cancel_requested
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor:listener")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "the job notification listener died; other nodes' jobs wait for polls", exc_info=task.exception()
            )

    async def run_once(self) -> None:
        """Connect, listen until the connection is lost, then return."""
        self._lost.clear()
        callbacks = {JOBS_DUE_CHANNEL: self._on_due}
        if self._on_cancel_requested is not None:
            callbacks[CANCEL_REQUESTED_CHANNEL] = self._on_cancel_requested
        connection = await NotificationConnection.open(
            self._database_url, callbacks, on_lost=self._lost.set, timeout_seconds=self._connect_timeout_seconds
        )
        try:
            for callback in callbacks.values():
                callback()  # anything submitted, or cancelled, while we were not listening
            while not connection.is_closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), timeout=HEALTH_CHECK_SECONDS)
                if self._lost.is_set():
                    return
                await connection.check()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                await self.run_once()
                delay = RECONNECT_FIRST_DELAY_SECONDS
            except Exception as error:  # whatever broke the connection: log, back off, retry
                logger.warning("job notifications unavailable (%s); reconnecting in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
