"""Writing down every ending the supervisor observed: in a task of its own (a shutdown that stops watching never
interrupts a write), retried through database hiccups, and left to the outcome sweep when no retry can mend it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from service.db.attempt_store import AttemptStore
from service.db.errors import DatabaseUnavailableError, describe
from service.domain.paths import attempt_files
from service.domain.records import AttemptEnding, RecordedOutcome
from service.domain.status import JobStatus
from service.runner.cleanup import AttemptFileCleaner
from service.supervisor.config import SupervisorConfig
from service.supervisor.endings import AttemptKey, with_output_tails
from service.supervisor.observer import SupervisorObserver
from service.supervisor.tasks import TaskSet

logger = logging.getLogger(__name__)

T = TypeVar("T")

RECORD_RETRY_FIRST_DELAY_SECONDS = 0.1
RECORD_RETRY_MAX_DELAY_SECONDS = 5.0


class OutcomeRecorder:
    """`record(key, ending, program)` returns at once; the write goes on until it is committed (or fenced out).

    `on_recorded` is told what recording did to the job (None when the attempt was no longer running), once each.
    """

    def __init__(
        self,
        attempts: AttemptStore,
        config: SupervisorConfig,
        observer: SupervisorObserver,
        on_recorded: Callable[[RecordedOutcome | None], None],
    ) -> None:
        self._attempts = attempts
        self._config = config
        self._observer = observer
        self._on_recorded = on_recorded
        self._writes = TaskSet("outcome-writer")
        self._spent_files = AttemptFileCleaner()
        # Attempts whose ending was observed and is being written: no longer watched, still `running` in the database.
        self._pending: set[int] = set()

    def is_pending(self, attempt_id: int) -> bool:
        return attempt_id in self._pending

    async def wait(self, timeout: float) -> bool:
        """True once every write handed over so far has ended, and the files it spent are removed."""
        if not await self._writes.wait(timeout):
            return False
        await self._spent_files.flush()
        return True

    async def close(self) -> None:
        """After the last write: remove what is still queued for removal; later removals happen in place."""
        await self._spent_files.close()

    async def cancel_all(self) -> None:
        await self._writes.cancel_all()

    def record(self, key: AttemptKey, ending: AttemptEnding, program_name: str) -> None:
        self._pending.add(key.attempt_id)  # before the watcher lets go of it: the sweep must not race us
        task = self._writes.spawn(self._record_durably(key, ending, program_name), name=str(key))
        task.add_done_callback(lambda _task: self._pending.discard(key.attempt_id))

    def withdraw(self, key: AttemptKey, unstarted_pid: int | None, reason: str) -> None:
        """Take back an attempt whose program never ran (see `AttemptStore.withdraw_unstarted`); returns at once."""
        self._pending.add(key.attempt_id)
        task = self._writes.spawn(self._withdraw_durably(key, unstarted_pid, reason), name=str(key))
        task.add_done_callback(lambda _task: self._pending.discard(key.attempt_id))

    async def _withdraw_durably(self, key: AttemptKey, unstarted_pid: int | None, reason: str) -> None:
        try:
            withdrawn = await self.with_retries(
                "withdraw",
                key,
                lambda: self._attempts.withdraw_unstarted(attempt_id=key.attempt_id, unstarted_pid=unstarted_pid),
            )
        except Exception:
            logger.exception(
                "could not withdraw %s, whose program never ran (%s); it stays `running` in the database until the "
                "next start withdraws it",
                key,
                reason,
            )
            return
        if withdrawn is None:
            logger.warning("%s never ran (%s) but was no longer running in the database; nothing written", key, reason)
        else:
            logger.info(
                "%s withdrawn: its program never ran (%s); job is now %s",
                key,
                reason,
                withdrawn.job_status.value if withdrawn.job_status else "unchanged",
            )
        self._spent_files.remove(attempt_files(self._config.output_dir, key.job_id, key.attempt_number))
        self._on_recorded(withdrawn)

    async def _record_durably(self, key: AttemptKey, ending: AttemptEnding, program_name: str) -> None:
        """Record the ending, retrying through database hiccups: an outcome observed is an outcome recorded.

        An error that no retry can mend is logged and the attempt left to the sweep (and to the next start), which
        read the outcome from the exit-status file.
        """
        try:
            recorded = await self._write_outcome(key, ending)
        except Exception:
            logger.exception(
                "could not record the outcome (%s) of %s: not an error that passes; it stays `running` in the "
                "database until the outcome sweep (or the next start) records it from its exit-status file",
                ending.outcome.value,
                key,
            )
            return
        self._log_outcome(key, ending, recorded)
        if recorded is not None:
            duration = None if ending.duration_ms is None else ending.duration_ms / 1000
            self._observer.attempt_finished(program_name, ending.outcome, duration)
        # Recorded (here, or by whoever fenced this writer out): the tails are on the row, the status file is spent.
        self._spent_files.remove(attempt_files(self._config.output_dir, key.job_id, key.attempt_number))
        self._on_recorded(recorded)

    async def _write_outcome(self, key: AttemptKey, ending: AttemptEnding) -> RecordedOutcome | None:
        if ending.stdout_bytes == 0 and ending.stderr_bytes == 0:
            ending = replace(ending, stdout_tail="", stderr_tail="")  # the keeper counted no output: nothing to read
        else:
            ending = await asyncio.to_thread(
                with_output_tails, ending, self._config.output_dir, key, self._config.output_tail_bytes
            )
        return await self.with_retries(
            "record the outcome of",
            key,
            lambda: self._attempts.record_outcome(
                attempt_id=key.attempt_id, ending=ending, retry_policy=self._config.retry_policy
            ),
        )

    async def with_retries(self, what: str, key: AttemptKey, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()`, tried again with a capped backoff for as long as the database is unavailable."""
        delay = RECORD_RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                return await operation()
            except DatabaseUnavailableError as error:
                self._observer.database_error()
                logger.warning("could not %s %s (%s); retrying in %.1f s", what, key, describe(error), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_DELAY_SECONDS)

    def _log_outcome(self, key: AttemptKey, ending: AttemptEnding, recorded: RecordedOutcome | None) -> None:
        """One line per attempt's end, with what became of its job: each log line costs the event loop, and the
        database holds the full history."""
        if recorded is None:
            logger.warning(
                "%s ended (%s) but was no longer running in the database; nothing written", key, ending.outcome.value
            )
            return
        if recorded.job_status is JobStatus.RETRIED:
            job_fate = f"retry scheduled in {recorded.retry_in_seconds or 0.0:.1f} s (attempt {key.attempt_number + 1})"
        elif recorded.job_status is not None and recorded.job_status.is_final:
            job_fate = f"job finished: {recorded.job_status.value}"
        else:
            job_fate = "job already left its attempt behind"  # cancelled meanwhile, say
        logger.info(
            "%s ended: %s, exit code %s, signal %s, %s ms%s; %s",
            key,
            ending.outcome.value,
            ending.exit_code,
            ending.signal,
            ending.duration_ms,
            f" ({ending.error})" if ending.error else "",
            job_fate,
        )
