"""The Python twin of exit_keeper.c, for machines without a C compiler: same arguments, same status format.

Run as a script (`python -I -S exit_keeper.py STATUS_PATH PROGRAM [ARGUMENT...]`); it imports only the standard
library so that it starts as fast as Python can. See exit_keeper.c for what it does and why.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

KEEPER_ABANDONED = 124
KEEPER_FAILED = 125
FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name)
)


def write_status_atomically(status_path: str, line: str) -> None:
    temporary_path = status_path + ".tmp"
    descriptor = os.open(temporary_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary_path, status_path)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: exit_keeper.py STATUS_PATH PROGRAM [ARGUMENT...]\n")
        return KEEPER_FAILED
    status_path, program_argv = argv[1], argv[2:]
    # Blocked, not ignored, until the program exists: a signal sent in that moment is passed on, not lost.
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    if os.read(0, 1) != b"g":
        return KEEPER_ABANDONED  # the service died before committing the attempt's pid: never run unrecorded
    null_input = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_input, 0)
    os.close(null_input)
    started = time.monotonic_ns()
    report_read, report_write = os.pipe()  # non-inheritable: closed by a successful exec

    child = os.fork()
    if child == 0:  # pragma: no cover  (runs in the forked child)
        try:
            for number in FORWARDED_SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
            os.close(report_read)
            os.execv(program_argv[0], program_argv)  # noqa: S606  (exec without a shell is the point)
        except OSError as error:
            os.write(report_write, str(error.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(report_write)
    for number in signal.sigpending() & set(FORWARDED_SIGNALS):
        os.kill(child, number)
    for number in FORWARDED_SIGNALS:
        signal.signal(number, signal.SIG_IGN)  # discards what was pending for the keeper itself
    signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
    with os.fdopen(report_read, "rb") as report:
        exec_report = report.read()

    _, status, usage = os.wait4(child, 0)
    finished = time.monotonic_ns()
    exit_code = os.waitstatus_to_exitcode(status)
    record = {
        "program_pid": child,
        "exit_code": exit_code if exit_code >= 0 and not exec_report else None,
        "signal": -exit_code if exit_code < 0 else None,
        "exec_errno": int(exec_report) if exec_report else None,
        "duration_ns": finished - started,
        "finished_at_ns": time.time_ns(),
        "user_cpu_us": int(usage.ru_utime * 1_000_000),
        "system_cpu_us": int(usage.ru_stime * 1_000_000),
        "max_rss_kb": usage.ru_maxrss,
    }
    write_status_atomically(status_path, json.dumps(record, separators=(",", ":")) + "\n")
    if exec_report:
        return 127
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
