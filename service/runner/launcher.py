"""Starting processes: under the exit keeper in its own session, forked by the fork server or spawned directly;
what runs is a `RunningProcess` (service/runner/process.py).

Nothing here knows about jobs or the database; the supervisor turns what happens here into rows.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.domain.limits import NO_LIMITS, JobLimits
from service.runner.exit_status import describe_output_error, describe_spawn_error
from service.runner.fork_server import (
    DEFAULT_REPLY_TIMEOUT_SECONDS,
    ForkServer,
    ForkServerGoneError,
    Served,
    SpawnRefused,
    SpawnRequest,
)
from service.runner.identity import IS_WINDOWS, process_start_time, start_time_from_ticks
from service.runner.job_user import JobUser
from service.runner.process import ExitUnknownError, RunningProcess

__all__ = ["ExitUnknownError", "ProcessLauncher", "ProcessSpec", "RunningProcess", "SpawnError", "StartNotMadeError"]

logger = logging.getLogger(__name__)
RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))
# A parent folder removed under a new attempt is made again this many times (one removal per earlier attempt).
FOLDER_RACE_RETRIES = 3


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


def make_folder(directory: Path) -> None:
    """`os.makedirs`, made again when a parent vanishes under it: the job's folder of an earlier attempt may be
    being removed (runner/cleanup.py) while this attempt makes its own inside it."""
    for _ in range(FOLDER_RACE_RETRIES):
        try:
            os.makedirs(directory, exist_ok=True)
        except FileNotFoundError:
            continue
        return
    os.makedirs(directory, exist_ok=True)


class ProcessLauncher:
    """Starts programs, under the exit keeper when there is one (`keeper_command`), directly otherwise.

    With a `job_user`, the keeper runs each program as that user (or not at all); it needs a keeper.
    """

    def __init__(
        self,
        keeper_command: Sequence[str] | None,
        *,
        job_user: JobUser | None = None,
        fork_server: bool = False,
        fork_server_reply_timeout_seconds: float = DEFAULT_REPLY_TIMEOUT_SECONDS,
    ) -> None:
        self._keeper_command = list(keeper_command) if keeper_command else None
        if job_user is not None and self._keeper_command is None:
            raise ValueError("running jobs as JOB_USER needs an exit keeper")
        self._job_user_options = [job_user.keeper_option] if job_user is not None else []
        # Only the compiled keeper has a fork server (the Python twin is a script, started per attempt).
        self._fork_server = (
            ForkServer(self._keeper_command, reply_timeout_seconds=fork_server_reply_timeout_seconds)
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
            self._served_process(spec, reply, spawned_at, started_monotonic)
            for spec, reply in zip(specs, replies, strict=True)
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
                make_folder(directory)
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
