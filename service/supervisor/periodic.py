"""The one shape of every maintenance loop: `run_once()` every few seconds, a failed round logged and tried again
later, and a stop that lets the round under way finish instead of cutting it off in the middle of a statement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from service.db.errors import DatabaseUnavailableError, describe

logger = logging.getLogger(__name__)

# A round still running this long after stop() is cancelled after all: a stop must not hang on a hung database.
STOP_WAIT_SECONDS = 10.0


class PeriodicTask:
    """Runs `round()` every `interval_seconds` (the first after `first_delay_seconds`) between `start()` and
    `stop()`. A round that raises is logged and the next one comes at its time: the loop never dies of it."""

    def __init__(
        self,
        name: str,
        round: Callable[[], Awaitable[object]],
        *,
        interval_seconds: float,
        first_delay_seconds: float = 0.0,
        stop_wait_seconds: float = STOP_WAIT_SECONDS,
    ) -> None:
        self._name = name
        self._round = round
        self._interval_seconds = interval_seconds
        self._first_delay_seconds = first_delay_seconds
        self._stop_wait_seconds = stop_wait_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=self._name)
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=self._stop_wait_seconds)
        if not done:
            logger.warning(
                "%s: the round under way did not end in %.0f s; cut off", self._name, self._stop_wait_seconds
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        delay = self._first_delay_seconds
        while not await self._stopped_within(delay):
            try:
                await self._round()
            except DatabaseUnavailableError as error:
                logger.warning(
                    "%s: database unavailable (%s); trying again in %.0f s",
                    self._name,
                    describe(error),
                    self._interval_seconds,
                )
            except Exception:
                logger.exception("%s failed; trying again in %.0f s", self._name, self._interval_seconds)
            delay = self._interval_seconds

    async def _stopped_within(self, seconds: float) -> bool:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical("%s died and no longer runs", self._name, exc_info=task.exception())
