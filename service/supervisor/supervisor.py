"""The supervisor: claims due jobs up to the node's free slots, starts their processes, records every ending."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from service.db.repository import AttemptEnding, AttemptRecord, ClaimedAttempt, RecordedOutcome, Repository
from service.domain.identifiers import format_job_id
from service.domain.status import AttemptOutcome, JobStatus
from service.runner.environment import child_environment
from service.runner.process import (
    ExitUnknownError,
    ProcessExit,
    ProcessLauncher,
    ProcessSpec,
    RunningProcess,
    SpawnError,
)
from service.runner.program import command_prefix
from service.supervisor.paths import attempt_files
from service.supervisor.tasks import TaskSet

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Failures worth retrying when writing to the database: the server or the network had a hiccup.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError, OSError, TimeoutError)
RECORD_RETRY_FIRST_DELAY_SECONDS = 0.1
RECORD_RETRY_MAX_DELAY_SECONDS = 5.0
KILL_WAIT_SECONDS = 5.0
# At shutdown, outcomes already observed get this long to reach the database; after that their exit-status files
# still hold them, and the next start records them.
FINISH_WRITES_SECONDS = 10.0


class ShutdownMode(StrEnum):
    """What a graceful stop (SIGTERM, SIGINT) does with the jobs still running (setting SHUTDOWN_MODE)."""

    LEAVE = "leave"
    """Leave them running; the next start adopts them and records their real outcome. Nothing is interrupted."""
    DRAIN = "drain"
    """Wait up to SHUTDOWN_GRACE_SECONDS for them to finish; leave any still running for the next start."""
    KILL = "kill"
    """SIGTERM their process groups, wait up to SHUTDOWN_GRACE_SECONDS, then SIGKILL; outcomes are `killed`."""


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    node_id: str
    max_concurrent_jobs: int
    retry_backoff_seconds: float
    poll_interval_seconds: float
    shutdown_grace_seconds: float
    output_dir: Path
    shutdown_mode: ShutdownMode = ShutdownMode.LEAVE
    inherited_environment: tuple[str, ...] = ()
    parent_environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True, slots=True)
class AttemptKey:
    """Which attempt a watcher is about, whether it was claimed now or adopted after a restart."""

    attempt_id: int
    job_id: int
    attempt_number: int

    @classmethod
    def of_claim(cls, claimed: ClaimedAttempt) -> AttemptKey:
        return cls(claimed.attempt_id, claimed.job_id, claimed.attempt_number)

    @classmethod
    def of_record(cls, record: AttemptRecord) -> AttemptKey:
        return cls(record.id, record.job_id, record.attempt_number)

    def __str__(self) -> str:
        return f"job {format_job_id(self.job_id)} attempt {self.attempt_number}"


def ending_from_exit(process_exit: ProcessExit) -> AttemptEnding:
    """How an observed (or recovered) exit is written down."""
    if process_exit.spawn_error is not None:
        outcome = AttemptOutcome.SPAWN_FAILED
    elif process_exit.signal is not None:
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
        error=process_exit.spawn_error,
    )


def lost_ending(reason: str) -> AttemptEnding:
    return AttemptEnding(outcome=AttemptOutcome.LOST, finished_at=datetime.now(UTC), error=reason)


class Supervisor:
    """Runs the claim loop. `run_once()` is one claim-and-launch round, callable directly from tests."""

    def __init__(self, repository: Repository, config: SupervisorConfig, launcher: ProcessLauncher) -> None:
        self._repository = repository
        self._config = config
        self._launcher = launcher
        self._wakeup = asyncio.Event()
        self._running: dict[int, RunningProcess] = {}
        self._watchers = TaskSet("attempt-watcher")
        self._recordings = TaskSet("outcome-writer")
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def running_count(self) -> int:
        """Attempts whose process this node is watching (started here or adopted)."""
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
            "supervisor started on node %s with %d slots", self._config.node_id, self._config.max_concurrent_jobs
        )

    def _claim_loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical("the supervisor's claim loop died; no new job will start", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop claiming, deal with running jobs as SHUTDOWN_MODE says, and finish the writes under way."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        grace = self._config.shutdown_grace_seconds
        mode = self._config.shutdown_mode
        if self.running_count and mode is not ShutdownMode.LEAVE:
            logger.info("shutdown (%s): %d job(s) running, grace %.0f s", mode.value, self.running_count, grace)
        if mode is ShutdownMode.DRAIN:
            await self._watchers.wait(grace)
        elif mode is ShutdownMode.KILL:
            self._signal_all(RunningProcess.terminate_group)
            if not await self._watchers.wait(grace):
                self._signal_all(RunningProcess.kill_group)
                await self._watchers.wait(KILL_WAIT_SECONDS)
        if self.running_count:
            logger.info("leaving %d job(s) running; the next start adopts them", self.running_count)
        await self._watchers.cancel_all()
        for process in self._running.values():
            process.abandon()  # a keeper not yet given its go-ahead exits without running anything
        self._running.clear()
        if not await self._recordings.wait(FINISH_WRITES_SECONDS):
            logger.error("some outcomes could not be written in time; the next start reads them from their files")
            await self._recordings.cancel_all()
        logger.info("supervisor stopped")

    def _signal_all(self, send: Callable[[RunningProcess], None]) -> None:
        for process in list(self._running.values()):
            send(process)

    async def wait_until_idle(self, timeout: float) -> bool:
        """True once every attempt started here has ended and its outcome is written (tests, draining)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self._watchers.wait(timeout):
            return False
        return await self._recordings.wait(max(0.0, deadline - loop.time()))

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
            self._launch(attempt)
        return len(claimed)

    def adopt(self, key: AttemptKey, process: RunningProcess) -> None:
        """Watch a process that a previous life of the service started (the reconciler found it alive)."""
        logger.info("%s adopted: pid %d still running", key, process.pid)
        self._running[key.attempt_id] = process
        self._watchers.spawn(self._watch(key, process), name=str(key))

    def _launch(self, claimed: ClaimedAttempt) -> None:
        key = AttemptKey.of_claim(claimed)
        try:
            process = self._launcher.start(self._process_spec(claimed))
        except SpawnError as error:
            logger.warning("%s could not start: %s", key, error)
            ending = AttemptEnding(
                outcome=AttemptOutcome.SPAWN_FAILED, finished_at=datetime.now(UTC), duration_ms=0, error=str(error)
            )
            self._recordings.spawn(self._record_durably(key, ending), name=str(key))
            return
        self._running[key.attempt_id] = process
        self._watchers.spawn(self._release_and_watch(key, process), name=str(key))

    def _process_spec(self, attempt: ClaimedAttempt) -> ProcessSpec:
        files = attempt_files(self._config.output_dir, attempt.job_id, attempt.attempt_number)
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
            stdout_path=files.stdout,
            stderr_path=files.stderr,
            status_path=files.exit_status,
        )

    async def _release_and_watch(self, key: AttemptKey, process: RunningProcess) -> None:
        # The program may only run once its pid is committed: a crash before that leaves nothing unrecorded.
        await self._with_retries(
            "record the process of",
            key,
            lambda: self._repository.record_process_started(
                attempt_id=key.attempt_id,
                pid=process.pid,
                process_started_at=process.started_at,
                started_at=process.spawned_at,
            ),
        )
        process.release()
        logger.info("%s started: pid %d", key, process.pid)
        await self._watch(key, process)

    async def _watch(self, key: AttemptKey, process: RunningProcess) -> None:
        try:
            try:
                ending = ending_from_exit(await process.wait())
            except ExitUnknownError as error:
                ending = lost_ending(str(error))
        finally:
            self._running.pop(key.attempt_id, None)
        # Written by a task of its own, so that a shutdown that stops watching never interrupts a write.
        self._recordings.spawn(self._record_durably(key, ending), name=str(key))

    async def _record_durably(self, key: AttemptKey, ending: AttemptEnding) -> None:
        """Record the ending, retrying through database hiccups: an outcome observed is an outcome recorded."""
        recorded = await self._with_retries(
            "record the outcome of",
            key,
            lambda: self._repository.record_outcome(
                attempt_id=key.attempt_id, ending=ending, retry_backoff_seconds=self._config.retry_backoff_seconds
            ),
        )
        self._log_outcome(key, ending, recorded)
        if recorded is not None and recorded.job_status is JobStatus.RETRIED:
            asyncio.get_running_loop().call_later(self._config.retry_backoff_seconds, self.wake)
        self.wake()  # a slot is free

    async def _with_retries(self, what: str, key: AttemptKey, operation: Callable[[], Awaitable[T]]) -> T:
        delay = RECORD_RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                return await operation()
            except TRANSIENT_DATABASE_ERRORS as error:
                logger.warning("could not %s %s (%s); retrying in %.1f s", what, key, error.__class__.__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_DELAY_SECONDS)

    def _log_outcome(self, key: AttemptKey, ending: AttemptEnding, recorded: RecordedOutcome | None) -> None:
        if recorded is None:
            logger.warning(
                "%s ended (%s) but was no longer running in the database; nothing written", key, ending.outcome.value
            )
            return
        logger.info(
            "%s ended: %s, exit code %s, signal %s, %s ms%s",
            key,
            ending.outcome.value,
            ending.exit_code,
            ending.signal,
            ending.duration_ms,
            f" ({ending.error})" if ending.error else "",
        )
        job_id = format_job_id(key.job_id)
        if recorded.job_status is JobStatus.RETRIED:
            logger.info(
                "job %s retry scheduled in %.1f s (attempt %d)",
                job_id,
                self._config.retry_backoff_seconds,
                key.attempt_number + 1,
            )
        elif recorded.job_status is not None and recorded.job_status.is_final:
            logger.info("job %s finished: %s", job_id, recorded.job_status.value)
