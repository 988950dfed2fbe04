"""The /stats queues drained in the background, every few seconds, so that they stay short however long nobody asks
for /stats."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.drain import DrainReport, drain_queues
from service.stats.patterns import PATTERNS, Pattern
from service.supervisor.periodic import PeriodicTask

logger = logging.getLogger(__name__)


class StatsDrainer:
    """`start()` runs `run_once()` every `interval_seconds` until `stop()`."""

    def __init__(self, engine: AsyncEngine, *, interval_seconds: float, patterns: Sequence[Pattern] = PATTERNS) -> None:
        self._engine = engine
        self._patterns = patterns
        self._periodic = PeriodicTask("the /stats queue drainer", self.run_once, interval_seconds=interval_seconds)

    async def run_once(self) -> DrainReport:
        report = await drain_queues(self._engine, self._patterns)
        if report.drained:
            logger.debug("folded %d /stats queue rows (rebuilt: %s)", report.drained, report.rebuilt)
        return report

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
