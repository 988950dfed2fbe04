"""Takes over the work of dead nodes: a node whose lease ran out (lease + margin ago) is declared dead by exactly
one live node, and its running attempts become `lost`, their jobs retried by the retry policy (see
NodeStore.rescue). Runs only where nodes have leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.db.errors import DatabaseUnavailableError
from service.db.node_store import NodeStore, RescueReport
from service.domain.lease import LeaseTimeline
from service.domain.retry import RetryPolicy

logger = logging.getLogger(__name__)


class Rescuer:
    def __init__(
        self,
        nodes: NodeStore,
        *,
        node_id: str,
        lease: LeaseTimeline,
        retry_policy: RetryPolicy,
        on_rescued: Callable[[], None],
    ) -> None:
        self._nodes = nodes
        self._node_id = node_id
        self._lease = lease
        self._retry_policy = retry_policy
        self._on_rescued = on_rescued
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor:rescuer")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the rescuer died; dead nodes' jobs wait for another node", exc_info=task.exception())

    async def run_once(self) -> RescueReport:
        report = await self._nodes.rescue(
            rescuer_id=self._node_id, margin_seconds=self._lease.margin_seconds, retry_policy=self._retry_policy
        )
        if report.nodes:
            logger.warning(
                "declared node(s) %s dead (lease ended over %.1f s ago): %d running attempt(s) lost, %d job(s) to "
                "run again",
                ", ".join(report.nodes),
                self._lease.margin_seconds,
                report.lost,
                report.retried,
            )
            self._on_rescued()
        return report

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except DatabaseUnavailableError as error:
                logger.warning("looking for dead nodes failed (%s); trying again", error)
            await asyncio.sleep(self._lease.rescue_check_interval_seconds)
