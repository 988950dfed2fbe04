"""A started (or adopted) attempt's process: its identity, a wait for its end that needs no thread, the go-ahead
for its keeper, and ways to signal its whole group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from service.runner.exit_status import ProcessExit, read_exit_status
from service.runner.fork_server import Served
from service.runner.identity import (
    HAS_PIDFD,
    IS_WINDOWS,
    group_is_alive,
    is_same_process,
    kill_member,
    live_group_members_linux,
)

# Where there is no pidfd, an adopted process is polled this often.
ADOPTED_POLL_SECONDS = 0.5
GO_AHEAD = b"g"


class ExitUnknownError(Exception):
    """The process is gone and nothing recorded how it ended (its keeper was killed, or there was no keeper)."""


async def _wait_readable(descriptor: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def _on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(descriptor, _on_ready)
    try:
        await ready
    finally:
        loop.remove_reader(descriptor)


class RunningProcess:
    """A started (or adopted) attempt: its identity, a way to wait for its end, and ways to end its whole group.

    `pid` is the process-group leader: the exit keeper, or the program itself when running without one.
    """

    def __init__(
        self,
        *,
        pid: int,
        started_at: datetime,
        spawned_at: datetime | None = None,
        program: str,
        status_path: Path | None,
        is_child: bool,
        go_ahead_fd: int | None = None,
        popen: subprocess.Popen[bytes] | None = None,
        served: Served | None = None,
        started_monotonic: float,
    ) -> None:
        self.pid = pid
        self.started_at = started_at
        """The OS's start time, as precise as it keeps it (clock ticks on a whole-second boot time): identity only."""
        self.spawned_at = spawned_at or datetime.now(UTC)
        """Our wall clock just before the spawn: what the attempt's `started_at` says."""
        self._program = program
        self._status_path = status_path
        self._is_child = is_child
        self._go_ahead_fd = go_ahead_fd
        self._popen = popen  # Windows only: there is no posix_spawn there
        self._served = served  # forked by the fork server, which reports its exit and holds its go-ahead
        self._go_ahead_pending = served is not None
        self._started_monotonic = started_monotonic
        self.returncode: int | None = None
        """Set once a child of ours has been reaped; None while it runs, and always for an adopted process."""

    @classmethod
    def adopt(cls, *, pid: int, started_at: datetime, program: str, status_path: Path) -> RunningProcess | None:
        """Take over watching a keeper left running by a previous life of the service; None if it is not there."""
        if not is_same_process(pid, started_at):
            return None
        return cls(
            pid=pid,
            started_at=started_at,
            program=program,
            status_path=status_path,
            is_child=False,
            started_monotonic=time.monotonic(),
        )

    @property
    def is_adopted(self) -> bool:
        return not self._is_child

    def release(self) -> None:
        """Let the keeper run the program (called once the attempt's pid is committed)."""
        if self._served is not None and self._go_ahead_pending:
            # Lost with a fork server that ended meanwhile: the keeper then exits abandoned, and says so.
            self._go_ahead_pending = False
            if self._served.connection.is_open:
                self._served.connection.go_ahead(self._served.request_id)
        if self._go_ahead_fd is not None:
            with contextlib.suppress(BrokenPipeError):
                os.write(self._go_ahead_fd, GO_AHEAD)
            self.abandon()

    def abandon(self) -> None:
        """Close the keeper's go-ahead pipe; if it was not released, the keeper exits without running anything."""
        if self._served is not None and self._go_ahead_pending:
            self._go_ahead_pending = False
            if self._served.connection.is_open:
                self._served.connection.abandon(self._served.request_id)
        if self._go_ahead_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._go_ahead_fd)
            self._go_ahead_fd = None

    async def wait(self) -> ProcessExit:
        """Wait for the end and say how it went. Safe to cancel: the process keeps running.

        Raises `ExitUnknownError` when the process is gone and nothing recorded its end.
        """
        if self._served is not None:
            returncode = await self._wait_for_served(self._served)
        else:
            returncode = await (self._wait_for_child() if self._is_child else self._wait_for_adopted())
        self.returncode = returncode
        if self._status_path is not None:
            recorded = read_exit_status(self._status_path, self._program, keeper_pid=self.pid)
            if recorded is not None:
                return recorded
        if returncode is None:
            raise ExitUnknownError(f"process {self.pid} ended and left no exit status")
        duration_ms = int((time.monotonic() - self._started_monotonic) * 1000)
        finished_at = datetime.now(UTC)
        if returncode < 0:
            # Without a status file, the keeper itself (or the program, run directly) died of this signal.
            return ProcessExit(exit_code=None, signal=-returncode, finished_at=finished_at, duration_ms=duration_ms)
        if self._status_path is not None:
            raise ExitUnknownError(f"the exit keeper {self.pid} exited with {returncode} and wrote no status")
        return ProcessExit(exit_code=returncode, signal=None, finished_at=finished_at, duration_ms=duration_ms)

    async def _wait_for_served(self, served: Served) -> int | None:
        # Shielded: a cancelled wait must not cancel the report that a later wait (or none) takes.
        status = await asyncio.shield(served.exit_status)
        if status is not None:
            return os.waitstatus_to_exitcode(status)
        await self._wait_for_adopted()  # the server ended first: the keeper is init's child now
        return None

    async def _wait_for_child(self) -> int:
        if self._popen is not None:
            return await asyncio.to_thread(self._popen.wait)
        if not HAS_PIDFD:
            # macOS and older kernels: no pidfd; a worker thread per waiting child is the portable fallback.
            _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            return os.waitstatus_to_exitcode(status)
        pidfd = os.pidfd_open(self.pid)
        try:
            await _wait_readable(pidfd)
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)  # noqa: ASYNC222  (the pidfd said it exited: this returns at once)
        return os.waitstatus_to_exitcode(status)

    async def _wait_for_adopted(self) -> None:
        """Not our child: we can see it end, but only its keeper's status file can say how."""
        if HAS_PIDFD:
            try:
                pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                return
            try:
                # The pidfd pins the process: if the pid was reused just now, this is a stranger; do not wait on it.
                if is_same_process(self.pid, self.started_at):
                    await _wait_readable(pidfd)
            finally:
                os.close(pidfd)
            return
        while is_same_process(self.pid, self.started_at):  # noqa: ASYNC110  (nothing could set an Event for us)
            await asyncio.sleep(ADOPTED_POLL_SECONDS)

    def signal_group(self, signal_number: int) -> None:
        """Send a signal to the attempt's whole process group, ignoring one already gone."""
        if IS_WINDOWS:
            # No process groups to signal here; terminate() is the closest equivalent.
            if self._popen is not None:
                with contextlib.suppress(OSError):
                    self._popen.terminate()
            return
        if (self.is_adopted or self._served is not None) and not is_same_process(self.pid, self.started_at):
            return  # never signal a stranger that inherited the pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal_number)

    def terminate_group(self) -> None:
        """SIGTERM: the program (and its children) end; the keeper stays to record that."""
        self.signal_group(signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL: everything in the group ends at once, the keeper too."""
        self.signal_group(signal.SIGTERM if IS_WINDOWS else signal.SIGKILL)

    def group_is_alive(self) -> bool:
        """Whether any process of the attempt's group still runs (the leader, or processes it left behind)."""
        if IS_WINDOWS:
            return self.returncode is None and self._popen is not None and self._popen.poll() is None
        return group_is_alive(self.pid)

    def kill_group_if_alive(self, *, spare_keeper: bool = True) -> None:
        """SIGKILL whatever still runs in the group, even once its leader has ended (its pgid stays reserved
        while any member lives, so it cannot name a stranger's group then).

        Under an exit keeper (on Linux), `spare_keeper` leaves the keeper alone: it then records the program's
        death, with its rusage, as for any other ending. Without it, the keeper dies too.
        """
        if IS_WINDOWS:
            self.kill_group()
            return
        if spare_keeper and self._status_path is not None and HAS_PIDFD and sys.platform == "linux":
            for member in live_group_members_linux(self.pid):
                if member != self.pid:
                    kill_member(member, self.pid)
        elif self.group_is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
