"""One process's life: start it in its own session, wait for its exit without a thread, signal its group.

Nothing here knows about jobs or the database; the supervisor turns what happens here into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

IS_WINDOWS = sys.platform == "win32"
# pidfd_open (Linux 5.3+) lets the event loop watch an exit like a socket: no thread per child.
HAS_PIDFD = hasattr(os, "pidfd_open")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run. `argv[0]` is executed directly; nothing is ever handed to a shell."""

    argv: Sequence[str]
    environment: Mapping[str, str]
    stdout_path: Path
    stderr_path: Path
    working_directory: Path | None = None


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """How a process ended: an exit code, or the signal that killed it."""

    exit_code: int | None
    signal: int | None
    finished_at: datetime
    duration_ms: int


class SpawnError(Exception):
    """The program could not be started; the message says why in words a user can act on."""


def _describe_spawn_error(program: str, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return f"program not found: {program}"
    if isinstance(error, PermissionError):
        return f"permission denied (is it executable?): {program}"
    return f"could not start {program}: {error.strerror or error}"


def process_start_time(pid: int) -> datetime | None:
    """The OS's record of when `pid` started; with the pid, it identifies a process even after pid reuse."""
    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), tz=UTC)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class RunningProcess:
    """A started child process: its identity, a way to wait for it, and ways to end its whole group."""

    def __init__(self, popen: subprocess.Popen[bytes], started_at: datetime, started_monotonic: float) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.started_at = started_at
        self._started_monotonic = started_monotonic

    async def wait(self) -> ProcessExit:
        """Wait for the exit and reap the process. Safe to cancel; the process keeps running."""
        if HAS_PIDFD:
            returncode = await self._wait_with_pidfd()
        else:
            # Windows and macOS: no pidfd; a worker thread per waiting child is the portable fallback.
            returncode = await asyncio.to_thread(self._popen.wait)
        duration_ms = int((time.monotonic() - self._started_monotonic) * 1000)
        finished_at = datetime.now(UTC)
        if returncode < 0:
            return ProcessExit(exit_code=None, signal=-returncode, finished_at=finished_at, duration_ms=duration_ms)
        return ProcessExit(exit_code=returncode, signal=None, finished_at=finished_at, duration_ms=duration_ms)

    async def _wait_with_pidfd(self) -> int:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.pid)
        try:
            exited = loop.create_future()

            def _on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, _on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)  # noqa: ASYNC222  (the pidfd said it exited: this returns at once)
        returncode = os.waitstatus_to_exitcode(status)
        # Tell Popen it has been reaped, so it neither reaps again nor warns that the child still runs.
        self._popen.returncode = returncode
        return returncode

    def signal_group(self, signal_number: int) -> None:
        """Send a signal to the process's whole group (it leads its own session), ignoring one already gone."""
        if IS_WINDOWS:
            # No process groups to signal here; terminate() is the closest equivalent.
            with contextlib.suppress(OSError):
                self._popen.terminate()
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal_number)

    def terminate_group(self) -> None:
        self.signal_group(signal.SIGTERM)

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL if not IS_WINDOWS else signal.SIGTERM)


def start_process(spec: ProcessSpec) -> RunningProcess:
    """Start the program with stdout and stderr in files (not pipes: the child must never block on us).

    Raises `SpawnError` when the OS refuses to run it.
    """
    spec.stdout_path.parent.mkdir(parents=True, exist_ok=True)
    spec.stderr_path.parent.mkdir(parents=True, exist_ok=True)
    program = spec.argv[0]
    with open(spec.stdout_path, "ab") as stdout, open(spec.stderr_path, "ab") as stderr:
        started_monotonic = time.monotonic()
        try:
            popen = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=dict(spec.environment),
                cwd=spec.working_directory,
                close_fds=True,
                # Its own session and process group, so that a whole tree can be signalled at once.
                start_new_session=not IS_WINDOWS,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP if IS_WINDOWS else 0,  # type: ignore[attr-defined,unused-ignore]
            )
        except OSError as error:
            raise SpawnError(_describe_spawn_error(program, error)) from error
    started_at = process_start_time(popen.pid) or datetime.now(UTC)
    return RunningProcess(popen, started_at, started_monotonic)
