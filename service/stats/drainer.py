"""The /stats queues drained in the background: folded into the rollup every few seconds, so that they stay short
however long nobody asks for /stats (one node at a time; the others find the lock taken and wait for next time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.compute import vacuum_queues
from service.stats.patterns import PATTERNS, Pattern
from service.stats.rollup import QUEUE_TABLES, ROLLUP_LOCK_KEY, refresh_rollup

logger = logging.getLogger(__name__)

# The queue tables are the module's own constants, never input.
_QUEUED = text("SELECT " + " + ".join(f"(SELECT count(*) FROM {table})" for table in QUEUE_TABLES))  # noqa: S608


@dataclass(frozen=True, slots=True)
class DrainReport:
    drained: int
    """Queue rows folded (or made moot by a rebuild)."""
    rebuilt: bool
    skipped: bool
    """Another node (or a /stats request) held the rollup's lock: nothing was done this time."""


class StatsDrainer:
    """`start()` runs `run_once()` every `interval_seconds` until `stop()`."""

    def __init__(self, engine: AsyncEngine, *, interval_seconds: float, patterns: Sequence[Pattern] = PATTERNS) -> None:
        self._engine = engine
        self._interval_seconds = interval_seconds
        self._patterns = patterns
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> DrainReport:
        async with self._engine.begin() as connection:
            # Never waits: whoever holds the lock is folding the same queues right now.
            locked = await connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK_KEY})
            if not locked.scalar_one():
                return DrainReport(drained=0, rebuilt=False, skipped=True)
            queued = int((await connection.execute(_QUEUED)).scalar_one())
            if queued == 0:
                return DrainReport(drained=0, rebuilt=False, skipped=False)
            refresh = await refresh_rollup(connection, self._patterns)
        if refresh.rebuilt:
            await vacuum_queues(self._engine)
        return DrainReport(drained=queued, rebuilt=refresh.rebuilt, skipped=False)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="stats-drainer")
        self._task.add_done_callback(_log_death)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                report = await self.run_once()
                if report.drained:
                    logger.debug("folded %d /stats queue rows (rebuilt: %s)", report.drained, report.rebuilt)
            except (SQLAlchemyError, OSError) as error:
                logger.warning("draining the /stats queues failed (%s); trying again later", error)
            await asyncio.sleep(self._interval_seconds)


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "the /stats queue drainer died; the queues grow until /stats is asked for", exc_info=task.exception()
        )
