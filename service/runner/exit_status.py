"""The exit-status file the exit keeper writes when a program ends, and how to read it back."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """How a process ended: an exit code, the signal that killed it, or why it could not start."""

    exit_code: int | None
    signal: int | None
    finished_at: datetime
    duration_ms: int
    spawn_error: str | None = None
    user_cpu_ms: int | None = None
    system_cpu_ms: int | None = None
    max_rss_kb: int | None = None
    stdout_bytes: int | None = None
    """What the program wrote to stdout, kept or not (known only under an exit keeper)."""
    stderr_bytes: int | None = None
    abandoned: bool = False
    """The keeper exited without its go-ahead: the program never ran (there is no exit to tell)."""


def describe_spawn_error(program: str, error_number: int) -> str:
    if error_number == errno.ENOENT:
        return f"program not found: {program}"
    if error_number in (errno.EACCES, errno.EPERM):
        return f"permission denied (is it executable?): {program}"
    if error_number == errno.ENOEXEC:
        return f"not an executable format (a script without a #! line?): {program}"
    return f"could not start {program}: {os.strerror(error_number)}"


def describe_output_error(folder: Path, error_number: int) -> str:
    return f"could not prepare the output files in {folder} ({os.strerror(error_number)}); the program did not run"


def describe_switch_user_error(error_number: int) -> str:
    return (
        f"could not switch to JOB_USER before running the program ({os.strerror(error_number)}); it did not run,"
        " as it would have run with the service's privileges"
    )


def read_exit_status(status_path: Path, program: str, *, keeper_pid: int | None = None) -> ProcessExit | None:
    """What the keeper wrote about the program's end, or None if it wrote nothing (yet).

    With `keeper_pid`, a record that a keeper was abandoned counts only if that keeper wrote it: one left by an
    earlier keeper of the same attempt number (an attempt withdrawn, then claimed again) says nothing of this one.
    """
    try:
        record = json.loads(status_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn file cannot exist (the keeper renames it into place); treat damage as absence
    finished_at = datetime.fromtimestamp(record["finished_at_ns"] / 1e9, tz=UTC)
    if record.get("abandoned"):
        if keeper_pid is not None and record.get("keeper_pid") != keeper_pid:
            return None
        return ProcessExit(exit_code=None, signal=None, finished_at=finished_at, duration_ms=0, abandoned=True)
    exec_errno = record.get("exec_errno")
    privilege_errno = record.get("privilege_errno")
    spawn_error = describe_spawn_error(program, exec_errno) if exec_errno is not None else None
    if privilege_errno is not None:
        spawn_error = describe_switch_user_error(privilege_errno)
    return ProcessExit(
        exit_code=record.get("exit_code"),
        signal=record.get("signal"),
        finished_at=finished_at,
        duration_ms=record["duration_ns"] // 1_000_000,
        spawn_error=spawn_error,
        user_cpu_ms=record.get("user_cpu_us", 0) // 1000,
        system_cpu_ms=record.get("system_cpu_us", 0) // 1000,
        max_rss_kb=record.get("max_rss_kb"),
        stdout_bytes=record.get("stdout_bytes"),
        stderr_bytes=record.get("stderr_bytes"),
    )
