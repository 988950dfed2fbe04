"""The supervisor: claims due jobs up to the node's free slots, starts their processes, ends those cancelled or
timed out, and records every ending."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial

from service.db.attempt_store import AttemptStore
from service.db.errors import DatabaseUnavailableError, describe
from service.domain.limits import NO_LIMITS, JobLimits
from service.domain.records import AttemptEnding, ClaimedAttempt, RecordedOutcome
from service.domain.shutdown import ShutdownMode
from service.domain.status import AttemptOutcome
from service.runner.launcher import (
    ExitUnknownError,
    ProcessLauncher,
    RunningProcess,
    SpawnError,
    StartNotMadeError,
)
from service.supervisor.config import SupervisorConfig
from service.supervisor.endings import (
    AttemptKey,
    ending_from_exit,
    lost_ending,
    with_limit_described,
)
from service.supervisor.observer import NoObserver, SupervisorObserver
from service.supervisor.periodic import STOP_WAIT_SECONDS
from service.supervisor.recorder import OutcomeRecorder
from service.supervisor.specs import process_spec
from service.supervisor.tasks import TaskSet
from service.supervisor.watched import Watched, as_stopped

logger = logging.getLogger(__name__)


KILL_WAIT_SECONDS = 5.0
# While a cancelled or timed-out attempt's group still has processes after its leader ended, look this often.
GROUP_POLL_SECONDS = 0.1
# At shutdown, outcomes already observed get this long to reach the database; after that their exit-status files
# still hold them, and the next start records them.
FINISH_WRITES_SECONDS = 10.0


class Supervisor:
    """Runs the claim loop. `run_once()` is one claim-and-launch round, callable directly from tests."""

    def __init__(
        self,
        attempts: AttemptStore,
        config: SupervisorConfig,
        launcher: ProcessLauncher,
        observer: SupervisorObserver | None = None,
    ) -> None:
        self._attempts = attempts
        self._observer = observer or NoObserver()
        self._config = config
        self._launcher = launcher
        self._wakeup = asyncio.Event()
        self._running: dict[int, Watched] = {}
        self._watchers = TaskSet("attempt-watcher")
        self._recorder = OutcomeRecorder(attempts, config, self._observer, self._after_recording)
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Looking for cancel requests costs a query: made when one is announced, and at least every poll interval
        # (in case an announcement was missed), not on every round of a busy claim loop.
        self._cancel_check_due = True
        self._next_cancel_poll = 0.0

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def running_count(self) -> int:
        """Attempts whose process this node is watching (started here or adopted)."""
        return len(self._watchers)

    @property
    def claim_loop_running(self) -> bool:
        """Whether the claim loop is alive (it keeps running through database outages)."""
        return self._loop_task is not None and not self._loop_task.done()

    def is_tracking(self, attempt_id: int) -> bool:
        """Whether this supervisor watches the attempt's process, or is writing its outcome."""
        return attempt_id in self._running or self._recorder.is_pending(attempt_id)

    @property
    def free_slots(self) -> int:
        return max(0, self._config.max_concurrent_jobs - self.running_count)

    def wake(self) -> None:
        """Ask for a claim round now (a job was submitted, a slot freed, a retry became due)."""
        self._wakeup.set()

    def cancel_requested(self) -> None:
        """A user asked (on some node) to cancel a job: look for cancel requests in a round now."""
        self._cancel_check_due = True
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
            # The round under way ends by itself (bounded): cut off mid-statement, it would leak its connection.
            self._wakeup.set()
            done, _ = await asyncio.wait({self._loop_task}, timeout=STOP_WAIT_SECONDS)
            if not done:
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
        for watched in self._running.values():
            watched.process.abandon()  # a keeper not yet given its go-ahead exits without running anything
        self._running.clear()
        if not await self._recorder.wait(FINISH_WRITES_SECONDS):
            logger.error("some outcomes could not be written in time; the next start reads them from their files")
            await self._recorder.cancel_all()
        await self._recorder.close()
        logger.info("supervisor stopped")

    def _signal_all(self, send: Callable[[RunningProcess], None]) -> None:
        for watched in list(self._running.values()):
            send(watched.process)

    async def wait_until_idle(self, timeout: float) -> bool:
        """True once every attempt started here has ended and its outcome is written (tests, draining)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self._watchers.wait(timeout):
            return False
        return await self._recorder.wait(max(0.0, deadline - loop.time()))

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wakeup.clear()
            try:
                if self._cancel_check_due or loop.time() >= self._next_cancel_poll:
                    await self._apply_announced_cancels(loop)
                started = await self.run_once()
            except DatabaseUnavailableError as error:
                self._observer.database_error()
                logger.warning(
                    "claim round failed (database unavailable: %s); trying again in %.1f s",
                    describe(error),
                    self._config.poll_interval_seconds,
                )
                started = 0
            except Exception:
                # Not a hiccup, but the loop must outlive it all the same: a stopped claim loop starts no job ever.
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
        asked_at = time.perf_counter()
        claimed = await self._attempts.claim_due_jobs(node_id=self._config.node_id, limit=self.free_slots)
        self._observer.claim_round(time.perf_counter() - asked_at, len(claimed))
        if claimed:
            # One message to the fork server for the whole round; results come back in the same order.
            started = await self._launcher.start_many([process_spec(self._config, attempt) for attempt in claimed])
            for attempt, process in zip(claimed, started, strict=True):
                self._launched(attempt, process)
        return len(claimed)

    async def _apply_announced_cancels(self, loop: asyncio.AbstractEventLoop) -> None:
        # Cleared before the query: an announcement arriving during it sets it again, for the next round.
        self._cancel_check_due = False
        self._next_cancel_poll = loop.time() + self._config.poll_interval_seconds
        try:
            await self.apply_cancel_requests()
        except BaseException:
            self._cancel_check_due = True  # not looked at yet: the next round tries again
            raise

    async def apply_cancel_requests(self) -> int:
        """End the attempts running here whose job a user asked to cancel; returns how many it began to end.

        The claim loop calls it when a NOTIFY (from any node's API) announces a cancel, and every poll interval.
        """
        if not self._running:
            return 0
        begun = 0
        for attempt_id in await self._attempts.attempts_to_cancel(self._config.node_id):
            watched = self._running.get(attempt_id)
            if watched is not None and self._begin_stop(watched, AttemptOutcome.CANCELLED, "cancelled by a user"):
                begun += 1
        return begun

    def watched_attempt_ids(self) -> list[int]:
        """The attempts whose process this node is watching now."""
        return list(self._running)

    def end_taken(self, attempt_ids: Iterable[int]) -> int:
        """Another node took these attempts over (this one was declared dead): SIGKILL their whole process groups,
        keepers included. Their endings then find the attempts no longer running and write nothing."""
        ended = 0
        for attempt_id in attempt_ids:
            watched = self._running.get(attempt_id)
            if watched is None:
                continue
            logger.warning(
                "%s was taken over by another node; ending its process group %d", watched.key, watched.process.pid
            )
            watched.process.kill_group()
            ended += 1
        return ended

    def adopt(
        self,
        key: AttemptKey,
        process: RunningProcess,
        *,
        started_at: datetime | None = None,
        timeout_seconds: float | None = None,
        cancel_requested: bool = False,
        limits: JobLimits = NO_LIMITS,
    ) -> None:
        """Watch a process that a previous life of the service started (the reconciler found it alive).

        Its timeout runs from `started_at`, the attempt's recorded start: time spent while the service was down
        counts. A cancel asked for meanwhile is carried out at once.
        """
        logger.info("%s adopted: pid %d still running", key, process.pid)
        watched = Watched(key, process, limits=limits)
        self._running[key.attempt_id] = watched
        self._watchers.spawn(self._watch(watched, started_at, timeout_seconds), name=str(key))
        if cancel_requested:
            self._begin_stop(watched, AttemptOutcome.CANCELLED, "cancelled by a user")

    def _launched(self, claimed: ClaimedAttempt, process: RunningProcess | SpawnError) -> None:
        key = AttemptKey.of_claim(claimed)
        if isinstance(process, StartNotMadeError):
            # No keeper of ours can run it (the fork server ended with its go-ahead): a start that did not happen.
            logger.warning("%s was not started: %s; it is withdrawn, to be claimed again", key, process)
            self._recorder.withdraw(key, None, str(process))
            return
        if isinstance(process, SpawnError):
            # The service's own trouble (an output folder that cannot be made, a full disk) is recorded this way
            # too, rather than leaving the claimed attempt `running`.
            error = process
            logger.warning("%s could not start: %s", key, error)
            # Nothing ran, so nothing was written: no output files to read (there may be no folder for them).
            ending = AttemptEnding(
                outcome=AttemptOutcome.SPAWN_FAILED,
                finished_at=datetime.now(UTC),
                duration_ms=0,
                error=str(error),
                stdout_bytes=0,
                stderr_bytes=0,
            )
            self._recorder.record(key, ending, claimed.program_name)
            return
        watched = Watched(key, process, claimed.program_name, limits=claimed.limits)
        self._running[key.attempt_id] = watched
        self._watchers.spawn(self._release_and_watch(watched, claimed.timeout_seconds, claimed.due_at), name=str(key))

    async def _release_and_watch(
        self, watched: Watched, timeout_seconds: float | None, due_at: datetime | None = None
    ) -> None:
        key, process = watched.key, watched.process
        # The program may only run once its pid is committed: a crash before that leaves nothing unrecorded.
        try:
            recorded = await self._recorder.with_retries(
                "record the process of",
                key,
                lambda: self._attempts.record_process_started(
                    attempt_id=key.attempt_id,
                    pid=process.pid,
                    process_started_at=process.started_at,
                    started_at=process.spawned_at,
                ),
            )
        except Exception:
            # Not a hiccup: the program must not run unrecorded. Its keeper exits without running it; watching it
            # to its end frees the slot and withdraws the attempt.
            logger.exception("could not record the process of %s; it is withdrawn without running", key)
            watched.abandoned_here = True
            process.abandon()
            await self._watch(watched, None, None)
            return
        if not recorded:
            # Another node took the attempt over meanwhile (this one was declared dead): it must never run here.
            logger.warning("%s was taken over by another node before its program started; not run", key)
            process.abandon()
            with contextlib.suppress(ExitUnknownError):
                await process.wait()  # the keeper exits at once; reap it
            self._running.pop(key.attempt_id, None)
            return
        process.release()
        # The program starts now; its timeout runs from here (an adopted one's, from the recorded start).
        released_at = datetime.now(UTC)
        logger.info("%s started: pid %d", key, process.pid)
        waited = None if due_at is None else (released_at - due_at).total_seconds()
        self._observer.attempt_started(watched.program_name, waited)
        await self._watch(watched, released_at, timeout_seconds)

    async def _watch(self, watched: Watched, started_at: datetime | None, timeout_seconds: float | None) -> None:
        key, process = watched.key, watched.process
        if timeout_seconds is not None:
            deadline = (started_at or process.spawned_at) + timedelta(seconds=timeout_seconds)
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            watched.timers.append(
                asyncio.get_running_loop().call_later(
                    max(0.0, remaining),
                    self._begin_stop,
                    watched,
                    AttemptOutcome.TIMED_OUT,
                    f"ran longer than its timeout of {timeout_seconds:g} s",
                )
            )
        never_ran = watched.abandoned_here
        try:
            try:
                process_exit = await process.wait()
                never_ran = never_ran or process_exit.abandoned
                ending = with_limit_described(ending_from_exit(process_exit), watched.limits)
            except ExitUnknownError as error:
                ending = lost_ending(str(error))
            if watched.stop_reason is not None and not never_ran:
                await self._until_group_ends(watched)
        finally:
            for timer in watched.timers:
                timer.cancel()
            self._running.pop(key.attempt_id, None)
        if never_ran:
            self._recorder.withdraw(key, process.pid, "its exit keeper never got the go-ahead")
            return
        ending = as_stopped(watched, ending)
        # Written by a task of its own, so that a shutdown that stops watching never interrupts a write.
        self._recorder.record(key, ending, watched.program_name)

    def _begin_stop(self, watched: Watched, reason: AttemptOutcome, detail: str) -> bool:
        """SIGTERM the attempt's group now and SIGKILL what is left of it after the grace period. False if the
        attempt is already being ended, or no longer watched."""
        if watched.stop_reason is not None or self._running.get(watched.key.attempt_id) is not watched:
            return False
        loop = asyncio.get_running_loop()
        grace = self._config.cancel_grace_seconds
        watched.stop_reason, watched.stop_detail, watched.stop_started = reason, detail, loop.time()
        logger.info(
            "%s %s: SIGTERM to its process group, SIGKILL in %.1f s if any of it still runs", watched.key, detail, grace
        )
        watched.process.terminate_group()
        # The program and what it started get SIGKILL after the grace period; the keeper is spared so that it can
        # record the ending. Should the keeper itself not end soon after, it is killed too.
        watched.timers.append(loop.call_later(grace, watched.process.kill_group_if_alive))
        watched.timers.append(
            loop.call_later(grace + KILL_WAIT_SECONDS, partial(watched.process.kill_group_if_alive, spare_keeper=False))
        )
        return True

    async def _until_group_ends(self, watched: Watched) -> None:
        """Once the leader has ended, wait for the rest of the group (a child that ignored SIGTERM, say) to end
        too, or to be killed when the grace period is over: an attempt is over when nothing of it runs."""
        loop = asyncio.get_running_loop()
        assert watched.stop_started is not None
        give_up = watched.stop_started + self._config.cancel_grace_seconds + 2 * KILL_WAIT_SECONDS
        # Nothing signals the end of a process that is not our child: look until the group is empty.
        while loop.time() < give_up and await asyncio.to_thread(watched.process.group_is_alive):  # noqa: ASYNC110
            await asyncio.sleep(GROUP_POLL_SECONDS)

    def _after_recording(self, recorded: RecordedOutcome | None) -> None:
        if recorded is not None and recorded.retry_in_seconds is not None:
            asyncio.get_running_loop().call_later(recorded.retry_in_seconds, self.wake)
        self.wake()  # a slot is free
