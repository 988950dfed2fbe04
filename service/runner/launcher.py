"""One process's life: start it under the exit keeper in its own session, wait for its exit without a thread,
read back how it ended, signal its group, and adopt it again after a restart of the service.

Nothing here knows about jobs or the database; the supervisor turns what happens here into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.domain.limits import NO_LIMITS, JobLimits
from service.runner.exit_status import ProcessExit, describe_output_error, describe_spawn_error, read_exit_status
from service.runner.fork_server import ForkServer, ForkServerGoneError, Served, SpawnRefused, SpawnRequest
from service.runner.identity import (
    HAS_PIDFD,
    IS_WINDOWS,
    group_is_alive,
    is_same_process,
    kill_member,
    live_group_members_linux,
    process_start_time,
    start_time_from_ticks,
)
from service.runner.job_user import JobUser

logger = logging.getLogger(__name__)

# Where there is no pidfd, an adopted process is polled this often.
ADOPTED_POLL_SECONDS = 0.5
GO_AHEAD = b"g"
RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run. `argv[0]` is executed directly; nothing is ever handed to a shell."""

    argv: Sequence[str]
    environment: Mapping[str, str]
    stdout_path: Path
    stderr_path: Path
    status_path: Path
    """Where the exit keeper writes how the program ended."""
    output_limit_bytes: int | None = None
    """The most the exit keeper copies into each output file before its truncation marker; None: no limit."""
    output_tail_bytes: int = 0
    """Past the limit, how many of the last bytes of each stream the keeper still appends when the stream ends."""
    limits: JobLimits = NO_LIMITS
    """What the program may use; the exit keeper sets them (without a keeper they are not applied)."""
    lease_path: Path | None = None
    """The node's lease file (see runner/lease_file.py): the keeper ends the program once its deadline passes."""


class SpawnError(Exception):
    """The program could not be started; the message says why in words a user can act on."""


class StartNotMadeError(SpawnError):
    """The fork server ended before it said it had started the keeper: the program did not run, and cannot."""


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
                self._served.connection.go_ahead(self.pid)
        if self._go_ahead_fd is not None:
            with contextlib.suppress(BrokenPipeError):
                os.write(self._go_ahead_fd, GO_AHEAD)
            self.abandon()

    def abandon(self) -> None:
        """Close the keeper's go-ahead pipe; if it was not released, the keeper exits without running anything."""
        if self._served is not None and self._go_ahead_pending:
            self._go_ahead_pending = False
            if self._served.connection.is_open:
                self._served.connection.abandon(self.pid)
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


def _open_output_files(spec: ProcessSpec) -> tuple[int, int]:
    """The attempt's stdout and stderr files, opened for appending; `SpawnError` if either cannot be."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        stdout = os.open(spec.stdout_path, flags, 0o644)
        try:
            stderr = os.open(spec.stderr_path, flags, 0o644)
        except OSError:
            os.close(stdout)
            raise
    except OSError as error:
        raise SpawnError(describe_output_error(spec.stdout_path.parent, error.errno or errno.EIO)) from error
    return stdout, stderr


def _keeper_options(spec: ProcessSpec) -> list[str]:
    options = [] if spec.lease_path is None else [f"--lease-file={spec.lease_path}"]
    if spec.output_limit_bytes is not None:
        options += [f"--output-limit={spec.output_limit_bytes}", f"--output-tail={spec.output_tail_bytes}"]
    for option, value in (
        ("--memory-limit", spec.limits.memory_bytes),
        ("--cpu-limit", spec.limits.cpu_seconds),
        ("--open-files-limit", spec.limits.open_files),
    ):
        if value is not None:
            options.append(f"{option}={value}")
    return options


class ProcessLauncher:
    """Starts programs, under the exit keeper when there is one (`keeper_command`), directly otherwise.

    With a `job_user`, the keeper runs each program as that user (or not at all); it needs a keeper.
    """

    def __init__(
        self, keeper_command: Sequence[str] | None, *, job_user: JobUser | None = None, fork_server: bool = False
    ) -> None:
        self._keeper_command = list(keeper_command) if keeper_command else None
        if job_user is not None and self._keeper_command is None:
            raise ValueError("running jobs as JOB_USER needs an exit keeper")
        self._job_user_options = [job_user.keeper_option] if job_user is not None else []
        # Only the compiled keeper has a fork server (the Python twin is a script, started per attempt).
        self._fork_server = (
            ForkServer(self._keeper_command)
            if fork_server and self._keeper_command is not None and len(self._keeper_command) == 1 and not IS_WINDOWS
            else None
        )

    @property
    def uses_fork_server(self) -> bool:
        return self._fork_server is not None

    async def close(self) -> None:
        """End the fork server, if there is one (keepers released run on; the others exit abandoned)."""
        if self._fork_server is not None:
            await self._fork_server.close()

    async def start_many(self, specs: Sequence[ProcessSpec]) -> list[RunningProcess | SpawnError]:
        """Start each program as `start` does, in order; through the fork server, all in one message. A start
        that failed is its `SpawnError` in the list; `StartNotMadeError` if the fork server ended first."""
        if self._fork_server is None:
            return [self._start_or_error(spec) for spec in specs]
        assert self._keeper_command is not None
        spawned_at = datetime.now(UTC)
        started_monotonic = time.monotonic()
        try:
            replies = await self._fork_server.spawn([self._spawn_request(spec) for spec in specs])
        except OSError as error:
            # No fork server can be started (no process or descriptor left, say): this round spawns directly.
            logger.warning("could not start the fork server (%s); starting %d keeper(s) directly", error, len(specs))
            return [self._start_or_error(spec) for spec in specs]
        return [
            self._served_process(spec, reply, spawned_at, started_monotonic) for spec, reply in zip(specs, replies)
        ]

    def _start_or_error(self, spec: ProcessSpec) -> RunningProcess | SpawnError:
        try:
            return self.start(spec)
        except SpawnError as error:
            return error
        except OSError as error:
            return SpawnError(str(error))

    def _spawn_request(self, spec: ProcessSpec) -> SpawnRequest:
        return SpawnRequest(
            status_path=spec.status_path,
            stdout_path=spec.stdout_path,
            stderr_path=spec.stderr_path,
            options=[*self._job_user_options, *_keeper_options(spec)],
            argv=spec.argv,
            environment=spec.environment,
        )

    def _served_process(
        self,
        spec: ProcessSpec,
        reply: Served | SpawnRefused | ForkServerGoneError,
        spawned_at: datetime,
        started_monotonic: float,
    ) -> RunningProcess | SpawnError:
        program = spec.argv[0]
        if isinstance(reply, ForkServerGoneError):
            return StartNotMadeError(str(reply))
        if isinstance(reply, SpawnRefused):
            if reply.about_output:
                return SpawnError(describe_output_error(spec.stdout_path.parent, reply.errno))
            return SpawnError(describe_spawn_error(program, reply.errno))
        started_at = start_time_from_ticks(reply.start_ticks) if reply.start_ticks else process_start_time(reply.pid)
        return RunningProcess(
            pid=reply.pid,
            started_at=started_at or spawned_at,
            spawned_at=spawned_at,
            program=program,
            status_path=spec.status_path,
            is_child=True,
            served=reply,
            started_monotonic=started_monotonic,
        )

    @property
    def uses_keeper(self) -> bool:
        return self._keeper_command is not None

    def start(self, spec: ProcessSpec) -> RunningProcess:
        """Start the program with its stdout and stderr bound for files: written directly, or, under the exit
        keeper, through pipes that the keeper (never the service) holds and copies within the output limit. The
        program must not notice a crash of the service, nor block on it.

        Under a keeper, the program waits for `release()`. Raises `SpawnError` when it cannot be started.
        """
        program = spec.argv[0]
        if not os.path.isfile(program):
            raise SpawnError(describe_spawn_error(program, errno.ENOENT))
        if not IS_WINDOWS and not os.access(program, os.X_OK):
            raise SpawnError(describe_spawn_error(program, errno.EACCES))
        try:
            spec.status_path.unlink(missing_ok=True)
            # Usually one directory for all three: one makedirs, not three (mkdir calls stood out in the profile).
            for directory in {spec.status_path.parent, spec.stdout_path.parent, spec.stderr_path.parent}:
                os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise SpawnError(describe_output_error(spec.status_path.parent, error.errno or errno.EIO)) from error
        argv = (
            [*self._keeper_command, *self._job_user_options, *_keeper_options(spec), str(spec.status_path), *spec.argv]
            if self._keeper_command
            else [*spec.argv]
        )
        started_monotonic = time.monotonic()
        spawned_at = datetime.now(UTC)
        if IS_WINDOWS:
            return self._start_on_windows(spec, argv, program, started_monotonic)
        stdout, stderr = _open_output_files(spec)
        go_ahead_read, go_ahead_write = os.pipe() if self._keeper_command else (None, None)
        stdin = go_ahead_read if go_ahead_read is not None else os.open(os.devnull, os.O_RDONLY)
        try:
            # posix_spawn (vfork + exec in the C library) is the cheapest way to start a process from Python; the
            # parent's descriptors are not inheritable (PEP 446), so only the three below reach the child.
            pid = os.posix_spawn(
                argv[0],
                argv,
                dict(spec.environment),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, stdout, 1),
                    (os.POSIX_SPAWN_DUP2, stderr, 2),
                ],
                # Its own session and process group: a whole tree can be signalled at once, and a Ctrl-C or a
                # hang-up meant for the service never reaches it.
                setsid=True,
                # Python ignores SIGPIPE and SIGXFSZ for itself; programs expect the defaults.
                setsigdef=RESET_SIGNALS,
            )
        except OSError as error:
            if go_ahead_write is not None:
                os.close(go_ahead_write)
            raise SpawnError(describe_spawn_error(argv[0], error.errno or errno.EIO)) from error
        finally:
            for descriptor in (stdin, stdout, stderr):
                os.close(descriptor)
        return RunningProcess(
            pid=pid,
            started_at=process_start_time(pid) or spawned_at,
            spawned_at=spawned_at,
            program=program,
            status_path=spec.status_path if self._keeper_command else None,
            is_child=True,
            go_ahead_fd=go_ahead_write,
            started_monotonic=started_monotonic,
        )

    def _start_on_windows(
        self, spec: ProcessSpec, argv: list[str], program: str, started_monotonic: float
    ) -> RunningProcess:
        with open(spec.stdout_path, "ab") as stdout, open(spec.stderr_path, "ab") as stderr:
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    env=dict(spec.environment),
                    close_fds=True,
                    creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,  # type: ignore[attr-defined,unused-ignore]
                )
            except OSError as error:
                raise SpawnError(describe_spawn_error(argv[0], error.errno or errno.EIO)) from error
        return RunningProcess(
            pid=popen.pid,
            started_at=process_start_time(popen.pid) or datetime.now(UTC),
            program=program,
            status_path=None,
            is_child=True,
            popen=popen,
            started_monotonic=started_monotonic,
        )
