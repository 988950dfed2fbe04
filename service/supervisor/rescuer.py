"""Takes over the work of dead nodes: a node whose lease ran out (lease + margin ago) is declared dead by exactly
one live node, and its running attempts become `lost`, their jobs retried by the retry policy (see
NodeStore.rescue). Runs only where nodes have leases."""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.db.node_store import NodeStore, RescueReport
from service.domain.lease import LeaseTimeline
from service.domain.retry import RetryPolicy
from service.supervisor.periodic import PeriodicTask

logger = logging.getLogger(__name__)


class Rescuer:
    """`start()` runs `run_once()` every rescue-check interval until `stop()`."""

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
        self._periodic = PeriodicTask(
            "the rescuer", self.run_once, interval_seconds=lease.rescue_check_interval_seconds
        )

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

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
