"""Which process is which: a pid with the OS's start time, and the live members of a process group."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime, timedelta

import psutil

IS_WINDOWS = sys.platform == "win32"
# pidfd_open (Linux 5.3+) lets the event loop watch an exit like a socket: no thread per child, and it works for a
# process that is not our child (an adopted one).
HAS_PIDFD = hasattr(os, "pidfd_open")
# Start times from the OS are rounded to clock ticks; anything closer than this is the same process.
SAME_PROCESS_TOLERANCE = timedelta(milliseconds=50)


def process_start_time(pid: int) -> datetime | None:
    """The OS's record of when `pid` started; with the pid, it identifies a process even after pid reuse."""
    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), tz=UTC)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_same_process(pid: int | None, recorded_start: datetime | None) -> bool:
    """Whether `pid` still names the process that was recorded (a pid alone is no identity: pids are reused)."""
    if pid is None or recorded_start is None:
        return False
    current_start = process_start_time(pid)
    return current_start is not None and abs(current_start - recorded_start) <= SAME_PROCESS_TOLERANCE


def live_group_members_linux(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run, from /proc (zombies excluded)."""
    members = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue  # ended while we looked
            # The command name (field 2) is in parentheses and may contain anything; the rest follows the last ')'.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(entry.name))
    return members


def group_is_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a running member. A zombie is not running: it only waits for its
    parent (or an init that may be slow to reap orphans) to collect it."""
    if IS_WINDOWS:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(live_group_members_linux(pgid)) if sys.platform == "linux" else True


def kill_member(pid: int, pgid: int) -> None:
    """SIGKILL one member of group `pgid`, through a pidfd so that a pid reused meanwhile is never hit."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        if os.getpgid(pid) == pgid:  # the pidfd pins the process: still the member we listed
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass  # it ended in between
    finally:
        os.close(pidfd)
