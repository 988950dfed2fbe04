"""After a restart: settle every attempt that the database says is running on this node.

For each such attempt, in this order:
- its program provably never ran (no pid was committed, or its keeper wrote that it was abandoned before its
  go-ahead) → withdraw it: the attempt is taken back and does not count, and the job is due again;
- its exit keeper wrote an exit-status file → the program ended while the service was down: record that outcome;
- its keeper is still alive and is the same process (pid and start time match) → adopt it: the supervisor watches
  it and records its real outcome when it ends;
- neither → `lost`, and the job follows its retry policy.
A cancel asked for while the service was down is honoured: an adopted process is ended at once (its attempt is
`cancelled`), and a job whose attempt had ended, or is lost, becomes `cancelled` rather than retried. An adopted
attempt's timeout counts from its recorded start, time spent while the service was down included. Each settled
attempt gets the tail of its output files stored, as one settled by the supervisor does.
Without a keeper (EXIT_KEEPER=none, and always on Windows) a live leftover cannot tell its exit status to anyone,
so it is ended (its whole group) before being recorded as lost, and never runs beside its own retry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from service.db.attempt_store import AttemptStore
from service.domain.paths import attempt_files
from service.domain.records import AttemptEnding, AttemptRecord, RunningAttempt
from service.domain.retry import RetryPolicy
from service.runner.exit_status import read_exit_status
from service.runner.identity import IS_WINDOWS, is_same_process
from service.runner.launcher import RunningProcess
from service.runner.output import remove_after_recording
from service.supervisor.config import DEFAULT_OUTPUT_TAIL_BYTES
from service.supervisor.endings import (
    AttemptKey,
    ending_from_exit,
    lost_ending,
    with_limit_described,
    with_output_tails,
)
from service.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)

PROGRAM_LABEL = "the job's program"
AFTER_RESTART = "after restart"


class Settled(enum.Enum):
    """What became of one attempt found running in the database with nothing watching it."""

    RECOVERED = "recovered"
    """It had ended: the outcome was read from its exit-status file."""
    ADOPTED = "adopted"
    WITHDRAWN = "withdrawn"
    """Its program never ran: taken back, as if never claimed."""
    LOST = "lost"
    ENDED_AND_LOST = "ended and lost"
    """Still running without a keeper to tell its exit: ended, then recorded lost."""


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    examined: int
    adopted: int
    recovered: int
    """Ended while the service was down; outcome read from the exit-status file."""
    lost: int
    ended_leftovers: int
    seconds: float
    withdrawn: int = 0
    """Never ran (claimed, or its keeper abandoned, before the go-ahead): taken back without counting."""


class Reconciler:
    """Runs once at start-up, before the supervisor claims anything; `run_once()` is what tests call."""

    def __init__(
        self,
        attempts: AttemptStore,
        supervisor: Supervisor,
        *,
        output_dir: Path,
        retry_policy: RetryPolicy,
        keeper_in_use: bool,
        output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES,
    ) -> None:
        self._attempts = attempts
        self._supervisor = supervisor
        self._output_dir = output_dir
        self._retry_policy = retry_policy
        self._keeper_in_use = keeper_in_use
        self._output_tail_bytes = output_tail_bytes

    async def run_once(self) -> ReconcileReport:
        started = time.monotonic()
        attempts = await self._attempts.running_attempts_on_node(self._supervisor.node_id)
        settled = Counter([await self.settle(running) for running in attempts])
        report = ReconcileReport(
            examined=len(attempts),
            adopted=settled[Settled.ADOPTED],
            recovered=settled[Settled.RECOVERED],
            lost=settled[Settled.LOST] + settled[Settled.ENDED_AND_LOST],
            ended_leftovers=settled[Settled.ENDED_AND_LOST],
            seconds=time.monotonic() - started,
            withdrawn=settled[Settled.WITHDRAWN],
        )
        if attempts:
            logger.info(
                "reconciled %d running attempt(s) on node %s in %.3f s: %d adopted, %d ended while down, %d lost, "
                "%d withdrawn (never ran)",
                report.examined,
                self._supervisor.node_id,
                report.seconds,
                report.adopted,
                report.recovered,
                report.lost,
                report.withdrawn,
            )
        return report

    async def settle(self, running: RunningAttempt, *, occasion: str = AFTER_RESTART) -> Settled:
        """Settle one attempt that the database says is running here and nothing watches: record the outcome its
        exit-status file holds, adopt its process if it still runs, or record it lost. Also what the outcome sweep
        does with an attempt left unrecorded while the service runs."""
        attempt = running.attempt
        key = AttemptKey.of_record(attempt)
        status_path = attempt_files(self._output_dir, attempt.job_id, attempt.attempt_number).exit_status
        if self._keeper_in_use and attempt.pid is None:
            # Under a keeper the pid is committed before any go-ahead: without one, nothing ran.
            return await self._withdraw(attempt, None, "the service stopped before the program was started", occasion)
        process = None
        if self._keeper_in_use and attempt.pid is not None and attempt.process_started_at is not None:
            process = RunningProcess.adopt(
                pid=attempt.pid,
                started_at=attempt.process_started_at,
                program=PROGRAM_LABEL,
                status_path=status_path,
            )
        # Read the file after the liveness check: a keeper that ended in between has written it by now.
        process_exit = (
            read_exit_status(status_path, PROGRAM_LABEL, keeper_pid=attempt.pid) if self._keeper_in_use else None
        )
        if process_exit is not None and process_exit.abandoned:
            reason = "its exit keeper was abandoned before its go-ahead"
            return await self._withdraw(attempt, attempt.pid, reason, occasion)
        if process_exit is not None:
            await self._record(attempt, with_limit_described(ending_from_exit(process_exit), running.limits), occasion)
            return Settled.RECOVERED
        if process is not None:
            self._supervisor.adopt(
                key,
                process,
                started_at=attempt.started_at,
                timeout_seconds=running.timeout_seconds,
                cancel_requested=running.cancel_requested,
                limits=running.limits,
            )
            return Settled.ADOPTED
        ended = not self._keeper_in_use and is_same_process(attempt.pid, attempt.process_started_at)
        if ended:
            self._end_leftover(attempt)
        await self._record(attempt, lost_ending(self._lost_reason(attempt)), occasion)
        return Settled.ENDED_AND_LOST if ended else Settled.LOST

    def _lost_reason(self, attempt: AttemptRecord) -> str:
        if attempt.pid is None:  # without a keeper the program starts at once, before its pid is committed
            return "the service stopped before the program's process was recorded; whether it ran cannot be known"
        if not self._keeper_in_use:
            return "the service restarted; without an exit keeper the process's exit status cannot be known"
        return "the process and its exit keeper are gone and no exit status was written"

    async def _withdraw(self, attempt: AttemptRecord, unstarted_pid: int | None, reason: str, occasion: str) -> Settled:
        withdrawn = await self._attempts.withdraw_unstarted(attempt_id=attempt.id, unstarted_pid=unstarted_pid)
        remove_after_recording(attempt_files(self._output_dir, attempt.job_id, attempt.attempt_number))
        if withdrawn is not None:
            logger.info(
                "%s withdrawn %s: %s; it never ran and does not count; job is now %s",
                AttemptKey.of_record(attempt),
                occasion,
                reason,
                withdrawn.job_status.value if withdrawn.job_status else "unchanged",
            )
        return Settled.WITHDRAWN

    async def _record(self, attempt: AttemptRecord, ending: AttemptEnding, occasion: str) -> None:
        ending = await asyncio.to_thread(
            with_output_tails, ending, self._output_dir, AttemptKey.of_record(attempt), self._output_tail_bytes
        )
        recorded = await self._attempts.record_outcome(
            attempt_id=attempt.id, ending=ending, retry_policy=self._retry_policy
        )
        remove_after_recording(attempt_files(self._output_dir, attempt.job_id, attempt.attempt_number))
        if recorded is not None:
            logger.info(
                "%s recorded %s: %s; job is now %s",
                AttemptKey.of_record(attempt),
                occasion,
                ending.outcome.value,
                recorded.job_status.value if recorded.job_status else "unchanged",
            )

    def _end_leftover(self, attempt: AttemptRecord) -> None:
        assert attempt.pid is not None
        logger.warning("ending leftover process group %d of %s", attempt.pid, AttemptKey.of_record(attempt))
        try:
            if IS_WINDOWS:
                psutil.Process(attempt.pid).kill()
            else:
                os.killpg(attempt.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, psutil.Error):
            logger.warning("process %d was already gone", attempt.pid)
