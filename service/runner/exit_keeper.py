"""The Python twin of exit_keeper.c, for machines without a C compiler: same arguments, same status format.

Run as a script (`python -I -S exit_keeper.py [--output-limit=N] [--output-tail=N] [--memory-limit=BYTES]
[--cpu-limit=SECONDS] [--open-files-limit=COUNT] [--run-as=UID:GID[:GROUPS]] [--lease-file=PATH] STATUS_PATH PROGRAM
[ARG...]`); it imports only the standard library so that it starts as fast as Python can. See exit_keeper.c for what
it does and why: the program's output goes through pipes that the keeper copies into the files, within the limit,
and the program's group is ended once the node's lease (the time in the lease file) has passed.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import sys
import time

KEEPER_ABANDONED = 124
KEEPER_FAILED = 125
CHILD_SWITCH_USER_FAILED = 126
# The exec report of a child that could not become JOB_USER starts with this; a failed exec's is the bare errno.
SWITCH_USER_REPORT_PREFIX = b"user:"
COPY_BUFFER_BYTES = 65536
LEASE_CHECK_SECONDS = 0.25  # exit_keeper.c LEASE_CHECK_MS
# Past the soft CPU limit the program gets SIGXCPU; this much later, SIGKILL.
CPU_LIMIT_KILL_AFTER_SECONDS = 1
LIMIT_OPTIONS = {
    "--memory-limit": resource.RLIMIT_DATA,
    "--cpu-limit": resource.RLIMIT_CPU,
    "--open-files-limit": resource.RLIMIT_NOFILE,
}
FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)


class Stream:
    """One of the program's output streams on its way from a pipe into a file (see `take` in exit_keeper.c)."""

    def __init__(self, pipe_fd: int, file_fd: int, limit: int, tail: int) -> None:
        self.pipe_fd: int | None = pipe_fd
        self.file_fd = file_fd
        self.limit = limit
        self.tail = tail
        self.received = 0
        self.kept = 0
        self.truncated = False
        self.ring = bytearray()
        self.left_out = 0

    def keep(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.file_fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # a full disk loses output, never the program: the pipe is drained all the same
            view = view[written:]

    def take(self, data: bytes) -> None:
        self.received += len(data)
        if self.limit < 0:
            self.keep(data)
            return
        room = self.limit - self.kept
        if room > 0:
            self.keep(data[:room])
            self.kept += min(room, len(data))
            data = data[room:]
        if not data:
            return
        if not self.truncated:
            self.keep(
                f"\n[jobmanager: output truncated at {self.limit} bytes; the rest is discarded but for its last "
                f"{self.tail} bytes]\n".encode()
            )
            self.truncated = True
        self.ring += data
        excess = len(self.ring) - self.tail
        if excess > 0:
            del self.ring[:excess]
            self.left_out += excess

    def flush_tail(self) -> None:
        if not self.truncated or (not self.ring and not self.left_out):
            return
        self.keep(f"\n[jobmanager: {self.left_out} bytes discarded; the last {len(self.ring)} bytes follow]\n".encode())
        self.keep(self.ring)
        self.ring.clear()
        self.left_out = 0

    def copy_available(self) -> bool:
        """Read what the pipe holds now; True at end-of-file (the stream is then closed)."""
        assert self.pipe_fd is not None
        while True:
            try:
                data = os.read(self.pipe_fd, COPY_BUFFER_BYTES)
            except InterruptedError:
                continue
            except BlockingIOError:
                return False
            except OSError:
                data = b""
            if data:
                self.take(data)
                continue
            self.flush_tail()
            os.close(self.pipe_fd)
            self.pipe_fd = None
            return True


class Lease:
    """The lease file the service renews (see exit_keeper.c): past its deadline the whole group is ended."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.deadline_ms = -1
        self.next_check = 0.0

    @property
    def check_interval(self) -> float | None:
        return LEASE_CHECK_SECONDS if self.path is not None else None

    def end_group_if_lapsed(self) -> None:
        if self.path is None or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + LEASE_CHECK_SECONDS
        try:
            with open(self.path, "rb") as lease_file:
                deadline = int(lease_file.read(31).strip() or b"0")
            if deadline > 0:
                self.deadline_ms = deadline
        except (OSError, ValueError):
            pass  # unreadable: the last deadline read still holds
        if self.deadline_ms < 0 or time.time_ns() // 1_000_000 <= self.deadline_ms:
            return
        os.write(2, b"\n[jobmanager: this node's lease lapsed; the exit keeper ended the program]\n")
        os.killpg(0, signal.SIGKILL)


LEASE = Lease(None)


def write_status_atomically(status_path: str, line: str) -> None:
    temporary_path = status_path + ".tmp"
    descriptor = os.open(temporary_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary_path, status_path)


def write_abandoned_status(status_path: str) -> None:
    """Best effort: without the file the attempt is recorded lost (see write_abandoned_status in exit_keeper.c)."""
    record = {"abandoned": True, "keeper_pid": os.getpid(), "duration_ns": 0, "finished_at_ns": time.time_ns()}
    try:
        write_status_atomically(status_path, json.dumps(record, separators=(",", ":")) + "\n")
    except OSError as error:
        sys.stderr.write(f"exit_keeper: writing the status file: {error}\n")


def drain_wakeups(descriptor: int) -> None:
    while True:
        try:
            if not os.read(descriptor, 64):
                return
        except (BlockingIOError, InterruptedError):
            return


def copy_streams(streams: list[Stream], child_exited_fd: int | None) -> None:
    """Copy until the program exits (SIGCHLD wakes `child_exited_fd`), or, without it, until both streams end."""
    with selectors.DefaultSelector() as selector:
        for open_stream in streams:
            if open_stream.pipe_fd is not None:
                selector.register(open_stream.pipe_fd, selectors.EVENT_READ, open_stream)
        if child_exited_fd is not None:
            selector.register(child_exited_fd, selectors.EVENT_READ, None)
        while selector.get_map():
            events = selector.select(LEASE.check_interval)
            LEASE.end_group_if_lapsed()
            for key, _ in events:
                if key.data is None:
                    drain_wakeups(key.fd)
                    return
                ready: Stream = key.data
                if ready.copy_available():
                    selector.unregister(key.fd)


class RunAs:
    """--run-as=UID:GID[:G1,G2...]: who the program runs as (JOB_USER); see exit_keeper_user.h."""

    def __init__(self, value: str) -> None:
        uid, gid, *rest = value.split(":", 2)
        self.uid, self.gid = int(uid), int(gid)
        self.groups = [int(group) for group in rest[0].split(",")] if rest and rest[0] else []

    def become(self) -> None:
        """In the child, before exec: groups, group, user; raises OSError if any step fails or root can be regained."""
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)
        if self.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                return
            raise PermissionError(1, "root could be regained")


def parse_options(argv: list[str]) -> tuple[int, int, dict[int, int], RunAs | None, list[str]] | None:
    """The output limit and tail, the resource limits (see exit_keeper.c), who to run as, and the rest."""
    limit, tail, run_as = -1, 0, None
    resource_limits: dict[int, int] = {}
    index = 1
    while index < len(argv) and argv[index].startswith("--"):
        name, _, value = argv[index].partition("=")
        if name == "--lease-file" and value:
            LEASE.path = value
        elif name == "--run-as":
            try:
                run_as = RunAs(value)
            except ValueError:
                return None
        elif name not in ("--output-limit", "--output-tail", *LIMIT_OPTIONS) or not value.isdigit():
            return None
        elif name == "--output-limit":
            limit = int(value)
        elif name == "--output-tail":
            tail = int(value)
        else:
            resource_limits[LIMIT_OPTIONS[name]] = int(value)
        index += 1
    return limit, tail, resource_limits, run_as, argv[index:]


def apply_job_limits(resource_limits: dict[int, int]) -> None:
    """In the child, before exec: lower each limit (one already lower stays); raises OSError if one cannot be set."""
    for which, value in resource_limits.items():
        _, hard = resource.getrlimit(which)
        wanted_hard = value + CPU_LIMIT_KILL_AFTER_SECONDS if which == resource.RLIMIT_CPU else value
        if hard == resource.RLIM_INFINITY or wanted_hard < hard:
            hard = wanted_hard
        try:
            resource.setrlimit(which, (min(value, hard), hard))
        except ValueError as error:
            raise OSError(22, str(error)) from error


def fork_program(
    program_argv: list[str],
    output_pipes: list[tuple[int, int]],
    original_mask: set[int | signal.Signals],
    resource_limits: dict[int, int],
    run_as: RunAs | None,
) -> tuple[int, bytes]:
    """Start the program with its output into the pipes; returns its pid and the errno text of a failed exec."""
    report_read, report_write = os.pipe()  # non-inheritable: closed by a successful exec
    child = os.fork()
    if child == 0:  # pragma: no cover  (runs in the forked child)
        try:
            for number in FORWARDED_SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
            os.close(report_read)
            os.dup2(output_pipes[0][1], 1)  # dup2 makes the copies inheritable: only 0, 1, 2 reach the program
            os.dup2(output_pipes[1][1], 2)
            apply_job_limits(resource_limits)
            if run_as is not None:
                try:
                    run_as.become()
                except OSError as error:
                    os.write(report_write, SWITCH_USER_REPORT_PREFIX + str(error.errno or 0).encode())
                    os._exit(CHILD_SWITCH_USER_FAILED)
            os.execv(program_argv[0], program_argv)  # noqa: S606  (exec without a shell is the point)
        except OSError as error:
            os.write(report_write, str(error.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(report_write)
    for _, write_end in output_pipes:
        os.close(write_end)
    for number in signal.sigpending() & set(FORWARDED_SIGNALS):
        os.kill(child, number)
    for number in FORWARDED_SIGNALS:
        signal.signal(number, signal.SIG_IGN)  # discards what was pending for the keeper itself
    signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
    with os.fdopen(report_read, "rb") as report:
        return child, report.read()


def finish_output(streams: list[Stream]) -> None:
    """Copy what the program left in the pipes; a drainer goes on for processes that still hold them open."""
    still_open = [stream for stream in streams if stream.pipe_fd is not None and not stream.copy_available()]
    for stream in still_open:
        stream.flush_tail()
    if still_open and os.fork() == 0:  # pragma: no cover  (the drainer)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        copy_streams(still_open, None)
        os._exit(0)
    for stream in still_open:
        if stream.pipe_fd is not None:
            os.close(stream.pipe_fd)


def main(argv: list[str]) -> int:
    parsed = parse_options(argv)
    if parsed is None or len(parsed[4]) < 2:
        sys.stderr.write(
            "usage: exit_keeper.py [--output-limit=BYTES] [--output-tail=BYTES] [--memory-limit=BYTES]"
            " [--cpu-limit=SECONDS] [--open-files-limit=COUNT] [--run-as=UID:GID[:GROUPS]] [--lease-file=PATH]"
            " STATUS_PATH PROGRAM [ARGUMENT...]\n"
        )
        return KEEPER_FAILED
    limit, tail, resource_limits, run_as, (status_path, *program_argv) = parsed
    # Blocked, not ignored, until the program exists: a signal sent in that moment is passed on, not lost.
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    if os.read(0, 1) != b"g":
        # The service died (or gave up) before committing the attempt's pid: never run unrecorded, and say so.
        write_abandoned_status(status_path)
        return KEEPER_ABANDONED
    null_input = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_input, 0)
    os.close(null_input)
    output_pipes = [os.pipe(), os.pipe()]
    streams = [Stream(read_end, 1 + index, limit, tail) for index, (read_end, _) in enumerate(output_pipes)]
    for stream in streams:
        assert stream.pipe_fd is not None
        os.set_blocking(stream.pipe_fd, False)
    # SIGCHLD wakes the copy loop: Python's handler machinery writes to this descriptor (the self-pipe trick).
    child_exited_read, child_exited_write = os.pipe()
    os.set_blocking(child_exited_read, False)
    os.set_blocking(child_exited_write, False)
    signal.set_wakeup_fd(child_exited_write)
    signal.signal(signal.SIGCHLD, lambda _number, _frame: None)
    started = time.monotonic_ns()
    child, exec_report = fork_program(program_argv, output_pipes, original_mask, resource_limits, run_as)
    switch_failed = exec_report.startswith(SWITCH_USER_REPORT_PREFIX)
    privilege_errno = int(exec_report.removeprefix(SWITCH_USER_REPORT_PREFIX)) if switch_failed else None
    exec_report = b"" if switch_failed else exec_report

    while True:
        reaped, status, usage = os.wait4(child, os.WNOHANG)
        if reaped == child:
            break
        copy_streams(streams, child_exited_read)
    finished = time.monotonic_ns()
    finish_output(streams)  # everything the program wrote before it exited is in the pipes now
    exit_code = os.waitstatus_to_exitcode(status)
    record = {
        "program_pid": child,
        "exit_code": exit_code if exit_code >= 0 and not exec_report and not switch_failed else None,
        "signal": -exit_code if exit_code < 0 else None,
        "exec_errno": int(exec_report) if exec_report else None,
        "duration_ns": finished - started,
        "finished_at_ns": time.time_ns(),
        "user_cpu_us": int(usage.ru_utime * 1_000_000),
        "system_cpu_us": int(usage.ru_stime * 1_000_000),
        "max_rss_kb": usage.ru_maxrss,
        "stdout_bytes": streams[0].received,
        "stderr_bytes": streams[1].received,
        "privilege_errno": privilege_errno,
    }
    write_status_atomically(status_path, json.dumps(record, separators=(",", ":")) + "\n")
    if switch_failed:
        return CHILD_SWITCH_USER_FAILED
    if exec_report:
        return 127
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
