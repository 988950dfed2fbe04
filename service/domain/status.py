"""Job statuses, attempt outcomes and the one state machine that moves between them.

Everything that decides "what status comes next" lives here; the repository turns these decisions into guarded
SQL updates, and nothing else in the service invents a transition.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job stands. The names are the Node.js service's words, plus `retried` and `cancelled`."""

    QUEUED = "queued"
    """Accepted and waiting for a free slot; no attempt has started yet."""
    RUNNING = "running"
    """Its first attempt is running."""
    RETRIED = "retried"
    """An attempt failed and another one is waiting for its backoff to end, or running."""
    COMPLETED = "completed"
    """An attempt exited with code 0. Final."""
    CRASHED = "crashed"
    """The last allowed attempt failed. Final."""
    CANCELLED = "cancelled"
    """Cancelled by a user (POST /jobs/{jobId}/cancel) before it could finish. Final."""

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATUSES


FINAL_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.CRASHED, JobStatus.CANCELLED})

# The statuses a job can be claimed from, and the status it takes when an attempt of it starts.
STATUS_WHEN_ATTEMPT_STARTS: dict[JobStatus, JobStatus] = {
    JobStatus.QUEUED: JobStatus.RUNNING,
    JobStatus.RETRIED: JobStatus.RETRIED,
}

# Every transition the service makes by itself. Tests walk this table; the repository checks against it.
# Cancelling is one of them: a waiting job (queued, or retried between attempts) is cancelled at once; a job whose
# attempt runs becomes cancelled when that attempt's ending is recorded (see `status_after_attempt`). Running back
# to queued is the withdrawal of a first attempt whose program never ran (see `status_when_withdrawn`).
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.RETRIED, JobStatus.CRASHED, JobStatus.CANCELLED}
    ),
    JobStatus.RETRIED: frozenset({JobStatus.RETRIED, JobStatus.COMPLETED, JobStatus.CRASHED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CRASHED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# A job whose attempt is in flight has one of these statuses; an outcome may only be applied to such a job.
STATUSES_WITH_ATTEMPT_IN_FLIGHT = frozenset({JobStatus.RUNNING, JobStatus.RETRIED})


class AttemptOutcome(StrEnum):
    """How one run of a program ended (or that it has not ended yet)."""

    RUNNING = "running"
    """The attempt row is written and its process is (or is about to be) running."""
    SUCCEEDED = "succeeded"
    """The process exited with code 0."""
    FAILED = "failed"
    """The process exited with a non-zero code."""
    KILLED = "killed"
    """The process was ended by a signal."""
    SPAWN_FAILED = "spawn_failed"
    """The program could not be started (missing file, no permission to execute, ...)."""
    LOST = "lost"
    """The service lost track of the process and cannot tell how it ended."""
    CANCELLED = "cancelled"
    """Ended by the service (SIGTERM, then SIGKILL after the grace period) because a user cancelled the job."""
    TIMED_OUT = "timed_out"
    """Ended by the service (as for a cancel) because it ran longer than its job's timeoutSeconds."""

    @property
    def is_success(self) -> bool:
        return self is AttemptOutcome.SUCCEEDED

    @property
    def is_retried(self) -> bool:
        """Whether this ending lets the job try again (while attempts remain): all but success and a cancel."""
        return self not in (AttemptOutcome.SUCCEEDED, AttemptOutcome.CANCELLED, AttemptOutcome.RUNNING)


# The endings the retry policy retries; written out so the README and the tests can name them.
RETRIED_OUTCOMES = frozenset(outcome for outcome in AttemptOutcome if outcome.is_retried)

# A final job that POST /jobs/{jobId}/retry may run again, and the status it takes then: `retried` when it has
# attempts behind it, `queued` when it was cancelled before its first one. This is the only way out of a final
# status, and only at a user's request.
REOPENABLE_STATUSES = frozenset({JobStatus.CRASHED, JobStatus.CANCELLED})


class IllegalTransitionError(Exception):
    """A status change that the state machine does not allow."""

    def __init__(self, current: JobStatus, proposed: JobStatus) -> None:
        super().__init__(f"a job cannot go from {current.value!r} to {proposed.value!r}")
        self.current = current
        self.proposed = proposed


def check_transition(current: JobStatus, proposed: JobStatus) -> None:
    """Raise `IllegalTransitionError` unless `current → proposed` is in the table."""
    if proposed not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransitionError(current, proposed)


def status_after_attempt(
    current: JobStatus,
    outcome: AttemptOutcome,
    attempt_number: int,
    max_attempts: int,
    *,
    cancel_requested: bool = False,
) -> JobStatus:
    """The job's next status once attempt number `attempt_number` (1-based) ended with `outcome`.

    Success completes the job (even when a cancel came too late to stop it: the work is done). A cancelled
    attempt, or any other ending of a job whose cancel was asked for, cancels the job: it is never retried. Any
    other ending is retried while attempts remain, and crashes the job when the last allowed attempt has failed.
    """
    if outcome is AttemptOutcome.RUNNING:
        raise ValueError("an attempt that is still running has no outcome to apply")
    if outcome.is_success:
        proposed = JobStatus.COMPLETED
    elif outcome is AttemptOutcome.CANCELLED or cancel_requested:
        proposed = JobStatus.CANCELLED
    elif attempt_number < max_attempts:
        proposed = JobStatus.RETRIED
    else:
        proposed = JobStatus.CRASHED
    check_transition(current, proposed)
    return proposed


def status_when_withdrawn(current: JobStatus, attempt_number: int, *, cancel_requested: bool = False) -> JobStatus:
    """The job's status once attempt number `attempt_number` is withdrawn because its program never ran.

    The attempt does not count: the job is back where the claim found it, `queued` before its first attempt and
    `retried` before a later one. A cancel asked for meanwhile cancels it instead (nothing is running to end).
    """
    if cancel_requested:
        proposed = JobStatus.CANCELLED
    elif attempt_number <= 1:
        proposed = JobStatus.QUEUED
    else:
        proposed = JobStatus.RETRIED
    check_transition(current, proposed)
    return proposed


def status_when_reopened(current: JobStatus, attempts_count: int) -> JobStatus:
    """The status a final job takes when a user asks to run it again; raises unless it may be reopened."""
    if current not in REOPENABLE_STATUSES:
        raise IllegalTransitionError(current, JobStatus.RETRIED)
    return JobStatus.RETRIED if attempts_count > 0 else JobStatus.QUEUED
