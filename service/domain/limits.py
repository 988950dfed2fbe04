"""Limits every layer agrees on: the API refuses what the settings could never allow, and the other way round."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
"""The longest an attempt may run, for a job's timeoutSeconds and for DEFAULT_TIMEOUT_SECONDS alike (30 days)."""

MIN_MEMORY_LIMIT_BYTES = 1024 * 1024
"""Below this even a small program cannot load (1 MiB): refused for memoryLimitBytes and JOB_MEMORY_LIMIT_BYTES."""
MAX_MEMORY_LIMIT_BYTES = 2**60
"""1 EiB, beyond any machine: jobs.memory_limit_bytes is a bigint, and a larger request must be a 400, not a 500."""
MAX_CPU_LIMIT_SECONDS = MAX_TIMEOUT_SECONDS
MAX_OPEN_FILES_LIMIT = 1024 * 1024
"""The Linux kernel's default ceiling for RLIMIT_NOFILE (fs.nr_open)."""


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What each attempt of a job may use, set by the exit keeper with setrlimit before exec; None: no limit."""

    memory_bytes: int | None = None
    """RLIMIT_DATA: the program's heap and other private writable memory."""
    cpu_seconds: int | None = None
    """RLIMIT_CPU: SIGXCPU at this many seconds of CPU time, SIGKILL a second later."""
    open_files: int | None = None
    """RLIMIT_NOFILE: one more open descriptor than this fails with EMFILE."""


NO_LIMITS = JobLimits()
