"""Which process is which: a pid with the OS's start time, and the live members of a process group."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

import psutil

IS_WINDOWS = sys.platform == "win32"
# pidfd_open (Linux 5.3+) lets the event loop watch an exit like a socket: no thread per child, and it works for a
# process that is not our child (an adopted one).
HAS_PIDFD = hasattr(os, "pidfd_open")
# Start times from the OS are rounded to clock ticks; anything closer than this is the same process.
SAME_PROCESS_TOLERANCE = timedelta(milliseconds=50)
IS_LINUX = sys.platform == "linux"
# The boot time in /proc/stat moves only when the wall clock is stepped: read again this often, not per process.
BOOT_TIME_REREAD_SECONDS = 60.0


class _BootTime:
    """/proc/stat's `btime` (whole seconds since the epoch), read once a minute: the file is long and costly to
    build on every read, and a start time is wanted for every process the service starts."""

    def __init__(self) -> None:
        self._seconds = 0.0
        self._read_at: float | None = None

    def seconds(self) -> float:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= BOOT_TIME_REREAD_SECONDS:
            with open("/proc/stat", "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime"):
                        self._seconds = float(line.split()[1])
                        break
            self._read_at = now
        return self._seconds


_boot_time = _BootTime()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if IS_LINUX else 100


def start_time_from_ticks(ticks: int) -> datetime:
    """A start time in clock ticks since boot (/proc/<pid>/stat, field 22), on the wall clock: the same sum
    psutil's `create_time()` makes, so that start times recorded either way compare equal."""
    return datetime.fromtimestamp(ticks / _CLOCK_TICKS + _boot_time.seconds(), tz=UTC)


def start_ticks_from_stat(stat: bytes) -> int:
    """Field 22 of a /proc/<pid>/stat line. The command name (field 2) is in parentheses and may contain anything;
    the fields after the last ')' start at field 3."""
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def process_start_time(pid: int) -> datetime | None:
    """The OS's record of when `pid` started; with the pid, it identifies a process even after pid reuse."""
    if IS_LINUX:
        # Straight from /proc: one read, where psutil's object and its boot-time lookup cost several times more.
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:
            return None  # no such process (or not ours to look at)
        return start_time_from_ticks(start_ticks_from_stat(stat))
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
