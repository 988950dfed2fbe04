"""How an attempt's end is written down, shared by the supervisor (which watched it) and the reconciler (which
found it after a restart)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from service.domain.identifiers import format_job_id
from service.domain.limits import JobLimits
from service.domain.paths import attempt_files
from service.domain.records import AttemptEnding, AttemptRecord, ClaimedAttempt
from service.domain.status import AttemptOutcome
from service.runner.exit_status import ProcessExit
from service.runner.output import tail_text


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
        user_cpu_ms=process_exit.user_cpu_ms,
        system_cpu_ms=process_exit.system_cpu_ms,
        max_rss_kb=process_exit.max_rss_kb,
        stdout_bytes=process_exit.stdout_bytes,
        stderr_bytes=process_exit.stderr_bytes,
    )


def with_output_tails(ending: AttemptEnding, output_dir: Path, key: AttemptKey, tail_bytes: int) -> AttemptEnding:
    """The ending with the last `tail_bytes` of each output file, for the attempt row (blocking file reads)."""
    files = attempt_files(output_dir, key.job_id, key.attempt_number)
    return replace(
        ending, stdout_tail=tail_text(files.stdout, tail_bytes), stderr_tail=tail_text(files.stderr, tail_bytes)
    )


def lost_ending(reason: str) -> AttemptEnding:
    return AttemptEnding(outcome=AttemptOutcome.LOST, finished_at=datetime.now(UTC), error=reason)


# SIGXCPU: the soft CPU limit was reached; SIGKILL follows at the hard one, a second later (see exit_keeper.c).
_CPU_LIMIT_SIGNAL = getattr(signal, "SIGXCPU", None)
# An allocation refused under RLIMIT_DATA cannot be seen from outside; a program that does not check it tends to
# end by one of these (or exit with an error of its own).
_MEMORY_FAILURE_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGKILL") if hasattr(signal, name)
)
MILLISECONDS_PER_SECOND = 1000


def with_limit_described(ending: AttemptEnding, limits: JobLimits) -> AttemptEnding:
    """A program killed by a signal gets an error saying which of its limits it hit (or probably hit)."""
    if ending.outcome is not AttemptOutcome.KILLED or ending.signal is None or ending.error is not None:
        return ending
    cpu_ms = (ending.user_cpu_ms or 0) + (ending.system_cpu_ms or 0)
    if limits.cpu_seconds is not None and (
        ending.signal == _CPU_LIMIT_SIGNAL
        or (ending.signal == signal.SIGKILL and cpu_ms >= limits.cpu_seconds * MILLISECONDS_PER_SECOND)
    ):
        return replace(ending, error=f"exceeded its CPU limit of {limits.cpu_seconds} s")
    if limits.memory_bytes is not None and ending.signal in _MEMORY_FAILURE_SIGNALS:
        return replace(
            ending,
            error=f"killed by signal {ending.signal}; it may have hit its memory limit of {limits.memory_bytes} bytes",
        )
    return ending
