"""After a restart: settle every attempt that the database says is running on this node."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil

from service.db.repository import AttemptEnding, AttemptRecord, Repository
from service.domain.identifiers import format_job_id
from service.domain.status import AttemptOutcome
from service.runner.process import IS_WINDOWS, process_start_time

logger = logging.getLogger(__name__)

# Start times from the OS are rounded to clock ticks; anything closer than this is the same process.
SAME_PROCESS_TOLERANCE = timedelta(milliseconds=50)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    examined: int
    lost: int
    ended_leftovers: int


def is_same_process(pid: int | None, recorded_start: datetime | None) -> bool:
    """Whether `pid` still names the process that was recorded (a pid alone is no identity: pids are reused)."""
    if pid is None or recorded_start is None:
        return False
    current_start = process_start_time(pid)
    return current_start is not None and abs(current_start - recorded_start) <= SAME_PROCESS_TOLERANCE


class Reconciler:
    """Runs once at start-up, before the supervisor claims anything.

    A process left running by a crashed predecessor cannot have its exit status read back by this process, so
    it is ended (its whole group) rather than left to run beside a retry; the attempt is recorded as `lost` and
    the job follows its retry policy.
    """

    def __init__(self, repository: Repository, *, node_id: str, retry_backoff_seconds: float) -> None:
        self._repository = repository
        self._node_id = node_id
        self._retry_backoff_seconds = retry_backoff_seconds

    async def run_once(self) -> ReconcileReport:
        attempts = await self._repository.running_attempts_on_node(self._node_id)
        lost = ended = 0
        for attempt in attempts:
            if is_same_process(attempt.pid, attempt.process_started_at):
                self._end_leftover(attempt)
                ended += 1
                reason = "the service restarted while the process ran; it was ended so it cannot run twice"
            else:
                reason = "the service restarted and the process was gone; its exit status is unknown"
            if await self._record_lost(attempt, reason):
                lost += 1
        if attempts:
            logger.info(
                "reconciled %d running attempt(s) on node %s: %d lost, %d leftover process(es) ended",
                len(attempts),
                self._node_id,
                lost,
                ended,
            )
        return ReconcileReport(examined=len(attempts), lost=lost, ended_leftovers=ended)

    def _end_leftover(self, attempt: AttemptRecord) -> None:
        assert attempt.pid is not None
        logger.warning(
            "ending leftover process group %d of job %s attempt %d",
            attempt.pid,
            format_job_id(attempt.job_id),
            attempt.attempt_number,
        )
        try:
            if IS_WINDOWS:
                psutil.Process(attempt.pid).kill()
            else:
                os.killpg(attempt.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, psutil.Error):
            logger.warning("process %d was already gone", attempt.pid)

    async def _record_lost(self, attempt: AttemptRecord, reason: str) -> bool:
        recorded = await self._repository.record_outcome(
            attempt_id=attempt.id,
            ending=AttemptEnding(outcome=AttemptOutcome.LOST, finished_at=datetime.now(UTC), error=reason),
            retry_backoff_seconds=self._retry_backoff_seconds,
        )
        if recorded is not None:
            logger.info(
                "job %s attempt %d recorded as lost; job is now %s",
                format_job_id(attempt.job_id),
                attempt.attempt_number,
                recorded.job_status.value if recorded.job_status else "unchanged",
            )
        return recorded is not None
