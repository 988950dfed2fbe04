"""The supervisor: claims due jobs up to the node's free slots, starts their processes, records every ending."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from service.db.repository import AttemptEnding, ClaimedAttempt, RecordedOutcome, Repository
from service.domain.identifiers import format_job_id
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.environment import child_environment
from service.runner.process import ProcessExit, ProcessSpec, RunningProcess, SpawnError, start_process
from service.runner.program import command_prefix
from service.supervisor.tasks import TaskSet

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Failures worth retrying when writing to the database: the server or the network had a hiccup.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError, OSError, TimeoutError)
RECORD_RETRY_FIRST_DELAY_SECONDS = 0.1
RECORD_RETRY_MAX_DELAY_SECONDS = 5.0
KILL_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    node_id: str
    max_concurrent_jobs: int
    retry_backoff_seconds: float
    poll_interval_seconds: float
    shutdown_grace_seconds: float
    output_dir: Path
    inherited_environment: tuple[str, ...] = ()
    parent_environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def _ending_from_exit(process_exit: ProcessExit) -> AttemptEnding:
    if process_exit.signal is not None:
        outcome = AttemptOutcome.KILLED
    elif process_exit.exit_code == 0:
        outcome = AttemptOutcome.SUCCEEDED
    else:
        outcome = AttemptOutcome.FAILED
    return AttemptEnding(
        outcome=outcome,
        finished_at=process_exit.finished_at,
        exit_code=process_exit.exit_code,
        signal=process_exit.signal,
        duration_ms=process_exit.duration_ms,
    )


class Supervisor:
    """Runs the claim loop. `run_once()` is one claim-and-launch round, callable directly from tests."""

    def __init__(self, repository: Repository, config: SupervisorConfig) -> None:
        self._repository = repository
        self._config = config
        self._wakeup = asyncio.Event()
        self._running: dict[int, RunningProcess] = {}
        self._watchers = TaskSet("attempt-watcher")
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def running_count(self) -> int:
        """Attempts this node has claimed and not yet recorded an ending for."""
        return len(self._watchers)

    @property
    def free_slots(self) -> int:
        return max(0, self._config.max_concurrent_jobs - self.running_count)

    def wake(self) -> None:
        """Ask for a claim round now (a job was submitted, a slot freed, a retry became due)."""
        self._wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        self._loop_task = asyncio.create_task(self._claim_loop(), name="supervisor:claim-loop")
        self._loop_task.add_done_callback(self._claim_loop_ended)
        logger.info(
            "supervisor started on node %s with %d slots",
            self._config.node_id,
            self._config.max_concurrent_jobs,
        )

    def _claim_loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical("the supervisor's claim loop died; no new job will start", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop claiming; let running processes finish within the grace period, then end their groups."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self.running_count:
            logger.info(
                "waiting up to %.0f s for %d running job(s) to finish",
                self._config.shutdown_grace_seconds,
                self.running_count,
            )
        if not await self._watchers.wait(self._config.shutdown_grace_seconds):
            for process in list(self._running.values()):
                logger.warning("terminating process group %d at shutdown", process.pid)
                process.terminate_group()
            if not await self._watchers.wait(KILL_WAIT_SECONDS):
                for process in list(self._running.values()):
                    process.kill_group()
                await self._watchers.wait(KILL_WAIT_SECONDS)
        await self._watchers.cancel_all()
        logger.info("supervisor stopped")

    async def wait_until_idle(self, timeout: float) -> bool:
        """True once every claimed attempt has been recorded (for tests and graceful shutdown)."""
        return await self._watchers.wait(timeout)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                started = await self.run_once()
            except TRANSIENT_DATABASE_ERRORS:
                logger.exception("claim round failed; trying again in %.1f s", self._config.poll_interval_seconds)
                started = 0
            if started and self.free_slots:
                continue  # there may be more due jobs than one round took
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._config.poll_interval_seconds)

    async def run_once(self) -> int:
        """Claim due jobs up to the free slots and start their processes; returns how many were claimed."""
        if self._stopping:
            return 0
        claimed = await self._repository.claim_due_jobs(node_id=self._config.node_id, limit=self.free_slots)
        for attempt in claimed:
            await self._launch(attempt)
        return len(claimed)

    async def _launch(self, attempt: ClaimedAttempt) -> None:
        job_id = format_job_id(attempt.job_id)
        spec = self._process_spec(attempt)
        try:
            process = start_process(spec)
        except SpawnError as error:
            logger.warning("job %s attempt %d could not start: %s", job_id, attempt.attempt_number, error)
            ending = AttemptEnding(
                outcome=AttemptOutcome.SPAWN_FAILED,
                finished_at=datetime.now(UTC),
                duration_ms=0,
                error=str(error),
            )
            self._watchers.spawn(self._record_durably(attempt, ending), name=f"{job_id}#{attempt.attempt_number}")
            return
        logger.info("job %s attempt %d started: pid %d", job_id, attempt.attempt_number, process.pid)
        self._running[attempt.attempt_id] = process
        self._watchers.spawn(self._watch(attempt, process), name=f"{job_id}#{attempt.attempt_number}")

    def _process_spec(self, attempt: ClaimedAttempt) -> ProcessSpec:
        attempt_dir = self._config.output_dir / format_job_id(attempt.job_id)
        environment = child_environment(
            self._config.parent_environment,
            self._config.inherited_environment,
            {
                "JOB_ID": format_job_id(attempt.job_id),
                "JOB_NAME": attempt.job_name,
                "JOB_ATTEMPT": str(attempt.attempt_number),
            },
        )
        return ProcessSpec(
            argv=[*command_prefix(Path(attempt.program)), *attempt.arguments],
            environment=environment,
            stdout_path=attempt_dir / f"attempt-{attempt.attempt_number}.stdout",
            stderr_path=attempt_dir / f"attempt-{attempt.attempt_number}.stderr",
        )

    async def _watch(self, attempt: ClaimedAttempt, process: RunningProcess) -> None:
        try:
            await self._with_retries(
                "record the process of",
                attempt,
                lambda: self._repository.record_process_started(
                    attempt_id=attempt.attempt_id, pid=process.pid, process_started_at=process.started_at
                ),
            )
            process_exit = await process.wait()
        finally:
            self._running.pop(attempt.attempt_id, None)
        await self._record_durably(attempt, _ending_from_exit(process_exit))

    async def _record_durably(self, attempt: ClaimedAttempt, ending: AttemptEnding) -> None:
        """Record the ending, retrying through database hiccups: an outcome observed is an outcome recorded."""
        recorded = await self._with_retries(
            "record the outcome of",
            attempt,
            lambda: self._repository.record_outcome(
                attempt_id=attempt.attempt_id,
                ending=ending,
                retry_backoff_seconds=self._config.retry_backoff_seconds,
            ),
        )
        self._log_outcome(attempt, ending, recorded)
        if recorded is not None and recorded.job_status is JobStatus.RETRIED:
            asyncio.get_running_loop().call_later(self._config.retry_backoff_seconds, self.wake)
        self.wake()  # a slot is free

    async def _with_retries(self, what: str, attempt: ClaimedAttempt, operation: Callable[[], Awaitable[T]]) -> T:
        delay = RECORD_RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                return await operation()
            except TRANSIENT_DATABASE_ERRORS as error:
                logger.warning(
                    "could not %s job %s attempt %d (%s); retrying in %.1f s",
                    what,
                    format_job_id(attempt.job_id),
                    attempt.attempt_number,
                    error.__class__.__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_DELAY_SECONDS)

    def _log_outcome(self, attempt: ClaimedAttempt, ending: AttemptEnding, recorded: RecordedOutcome | None) -> None:
        job_id = format_job_id(attempt.job_id)
        if recorded is None:
            logger.warning(
                "job %s attempt %d ended (%s) but was no longer running in the database; nothing written",
                job_id,
                attempt.attempt_number,
                ending.outcome.value,
            )
            return
        logger.info(
            "job %s attempt %d ended: %s, exit code %s, signal %s, %s ms",
            job_id,
            attempt.attempt_number,
            ending.outcome.value,
            ending.exit_code,
            ending.signal,
            ending.duration_ms,
        )
        if recorded.job_status is JobStatus.RETRIED:
            logger.info(
                "job %s retry scheduled in %.1f s (attempt %d)",
                job_id,
                self._config.retry_backoff_seconds,
                attempt.attempt_number + 1,
            )
        elif recorded.job_status is not None and recorded.job_status.is_final:
            logger.info("job %s finished: %s", job_id, recorded.job_status.value)
