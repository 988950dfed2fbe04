"""This node's place among the nodes: it registers, renews its lease every heartbeat, keeps the lease file its
exit keepers watch in step, and, when it learns it was declared dead, ends what was taken from it and joins again.

The timeline (service/domain/lease.py, docs/operations.md "Nodes"): a renewal started at t gives the database lease
until t' + lease (t' ≥ t, the database's clock) and the keepers until t + lease - margin; another node may declare
this one dead from lease_until + margin on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from service.db.errors import DatabaseUnavailableError
from service.db.node_store import NodeRegistration, NodeStore
from service.domain.lease import LeaseTimeline
from service.domain.paths import attempt_files
from service.runner.launcher import RunningProcess
from service.runner.lease_file import LeaseFile
from service.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)

# Without a lease the heartbeat only tells GET /nodes that the node lives.
LEASELESS_HEARTBEAT_SECONDS = 10.0
LEFTOVER_LABEL = "a program taken over by another node"


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    renewed: bool
    """The lease was renewed (False: this node had been declared dead, or the database was unreachable)."""
    rejoined: bool
    """It had been declared dead, and joined again."""
    ended: int
    """Attempts taken over by another node whose process groups this call ended."""


class Heartbeat:
    """`register()` once at start-up (before the reconciler), then `start()`; `stop(leaving=...)` at shutdown."""

    def __init__(
        self,
        nodes: NodeStore,
        supervisor: Supervisor,
        registration: NodeRegistration,
        *,
        lease: LeaseTimeline | None,
        shutdown_lease_seconds: float,
        lease_file: LeaseFile | None,
        output_dir: Path,
    ) -> None:
        self._nodes = nodes
        self._supervisor = supervisor
        self._registration = registration
        self._lease = lease
        self._shutdown_lease_seconds = shutdown_lease_seconds
        self._lease_file = lease_file
        self._output_dir = output_dir
        self._task: asyncio.Task[None] | None = None
        self._programs_may_run_until: float | None = None
        """The wall-clock time the lease file last promised the keepers (they read the same clock)."""

    @property
    def interval_seconds(self) -> float:
        return self._lease.heartbeat_interval_seconds if self._lease else LEASELESS_HEARTBEAT_SECONDS

    def lease_seconds_left(self) -> float | None:
        """How long this node's programs may still run on the lease renewed last (negative once it lapsed, the
        keepers then end them); None when the node runs without a lease."""
        if self._lease is None:
            return None
        if self._programs_may_run_until is None:
            return 0.0
        return self._programs_may_run_until - time.time()

    @property
    def _lease_seconds(self) -> float | None:
        return self._lease.lease_seconds if self._lease else None

    async def register(self) -> int:
        """Join as alive with a fresh lease. A node declared dead while it was away ends what is left of the
        processes of the attempts taken from it; returns how many it ended."""
        sent_at = time.time()
        before = await self._nodes.register(self._registration, lease_seconds=self._lease_seconds)
        self._extend_lease_file(sent_at)
        if before is None or before.state != "dead" or before.declared_dead_at is None:
            return 0
        logger.warning(
            "node %s was declared dead by %s at %s while it was away; its running attempts were taken over",
            self._registration.id,
            before.declared_dead_by,
            before.declared_dead_at.isoformat(),
        )
        ended = 0
        for attempt in await self._nodes.attempts_taken_since(self._registration.id, before.declared_dead_at):
            if attempt.pid is None or attempt.process_started_at is None:
                continue
            status_path = attempt_files(self._output_dir, attempt.job_id, attempt.attempt_number).exit_status
            process = RunningProcess.adopt(
                pid=attempt.pid, started_at=attempt.process_started_at, program=LEFTOVER_LABEL, status_path=status_path
            )
            if process is not None:
                logger.warning("ending process group %d, left from an attempt taken over", attempt.pid)
                process.kill_group()
                ended += 1
        return ended

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor:heartbeat")
        self._task.add_done_callback(self._ended)

    async def stop(self, *, leaving: bool) -> None:
        """Stop renewing. `leaving`: a graceful stop whose running jobs stay for the node's return: the node keeps
        its place for SHUTDOWN_LEASE_SECONDS, and so do its programs."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not leaving:
            return
        sent_at = time.time()
        try:
            kept = await self._nodes.leave(self._registration.id, lease_seconds=self._shutdown_lease_seconds)
        except DatabaseUnavailableError as error:
            logger.error(  # noqa: TRY400  (an outage, not a bug: no traceback)
                "could not publish the shutdown lease (%s); programs end with the current lease", error
            )
            return
        if kept and self._lease_file is not None and self._lease is not None:
            self._lease_file.extend_for(self._shutdown_lease_seconds - self._lease.margin_seconds, since=sent_at)
            self._programs_may_run_until = sent_at + self._shutdown_lease_seconds - self._lease.margin_seconds
            logger.info(
                "node %s keeps its place for %.0f s: programs left running are adopted on return",
                self._registration.id,
                self._shutdown_lease_seconds,
            )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical(
                "the heartbeat died; this node's programs end when its lease runs out", exc_info=task.exception()
            )

    async def run_once(self) -> HeartbeatReport:
        sent_at = time.time()
        if await self._nodes.renew(self._registration.id, lease_seconds=self._lease_seconds):
            self._extend_lease_file(sent_at)
            return HeartbeatReport(renewed=True, rejoined=False, ended=0)
        # Declared dead (or forgotten) meanwhile: whatever it still watches was taken over and runs elsewhere.
        taken = await self._nodes.taken_attempts(self._supervisor.watched_attempt_ids())
        ended = self._supervisor.end_taken(taken)
        logger.error(
            "node %s was declared dead by another node; %d attempt(s) it still watched were taken over and ended; "
            "joining again",
            self._registration.id,
            ended,
        )
        await self.register()
        return HeartbeatReport(renewed=False, rejoined=True, ended=ended)

    def _extend_lease_file(self, sent_at: float) -> None:
        if self._lease is not None:
            self._programs_may_run_until = sent_at + self._lease.fence_after_seconds
        if self._lease_file is not None and self._lease is not None:
            self._lease_file.extend_for(self._lease.fence_after_seconds, since=sent_at)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except DatabaseUnavailableError as error:
                logger.warning("heartbeat failed (%s); the lease is not renewed", error)
            await asyncio.sleep(self.interval_seconds)
