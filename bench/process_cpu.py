"""The CPU time of a process and of everything it started, from /proc/<pid>/stat, split by who spent it.

A process's own time is its utime + stime (fields 14-15 of /proc/<pid>/stat); cutime + cstime (fields 16-17) is
the time of the children it has reaped, each of them with the children they reaped in turn. The service's exit
keepers are its children (each reaps its program), or the children of a long-lived helper of the service (a fork
server) that reaps them: either way, the difference between two snapshots of the service and of each of its live
direct children (found through /proc/<pid>/task/*/children) accounts for every process below the service.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Fields after the command name (field 2, in parentheses, which may itself hold spaces and parentheses),
# counted from field 3 (the state): utime is field 14.
_UTIME, _STIME, _CUTIME, _CSTIME, _STARTTIME = 14 - 3, 15 - 3, 16 - 3, 17 - 3, 22 - 3


@dataclass(frozen=True)
class ProcessTimes:
    """One process's CPU seconds at one moment, and what tells it from a later process with the same pid."""

    pid: int
    name: str
    start_ticks: int
    user: float
    system: float
    children_user: float
    children_system: float

    @property
    def own(self) -> float:
        return self.user + self.system

    @property
    def children(self) -> float:
        return self.children_user + self.children_system

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)


def parse_stat(pid: int, text: str) -> ProcessTimes:
    """The times of one /proc/<pid>/stat line (in seconds)."""
    opening, closing = text.index("("), text.rindex(")")
    fields = text[closing + 2 :].split()
    if len(fields) <= _STARTTIME:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:120]!r}")

    def seconds(index: int) -> float:
        return int(fields[index]) / CLOCK_TICKS_PER_SECOND

    return ProcessTimes(
        pid=pid,
        name=text[opening + 1 : closing],
        start_ticks=int(fields[_STARTTIME]),
        user=seconds(_UTIME),
        system=seconds(_STIME),
        children_user=seconds(_CUTIME),
        children_system=seconds(_CSTIME),
    )


def read_times(pid: int) -> ProcessTimes | None:
    """The process's times now, or None if it no longer exists."""
    try:
        return parse_stat(pid, Path(f"/proc/{pid}/stat").read_text(encoding="utf-8"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def direct_children(pid: int) -> list[int]:
    """The live children of every thread of the process."""
    children: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(word) for word in listing.read_text(encoding="utf-8").split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return sorted(children)


@dataclass(frozen=True)
class TreeSnapshot:
    """A process and its live direct children, at one moment."""

    process: ProcessTimes
    children: dict[tuple[int, int], ProcessTimes]
    grandchildren: int
    """How many processes the direct children had running (keepers under a fork server)."""


def snapshot(pid: int) -> TreeSnapshot:
    process = read_times(pid)
    if process is None:
        raise ProcessLookupError(f"process {pid} is gone")
    children: dict[tuple[int, int], ProcessTimes] = {}
    grandchildren = 0
    for child_pid in direct_children(pid):
        times = read_times(child_pid)
        if times is not None:
            children[times.key] = times
            grandchildren += len(direct_children(child_pid))
    return TreeSnapshot(process=process, children=children, grandchildren=grandchildren)


def settled_snapshot(pid: int, *, timeout: float = 10.0, steady: float = 0.3) -> TreeSnapshot:
    """A snapshot once the process's children stop coming and going (its last keepers reaped), or at `timeout`.

    Settled means: no direct child has a child of its own, and the set of direct children stayed the same for
    `steady` seconds; what is left are long-lived helpers (a fork server), not keepers on their way out.
    """
    deadline = time.monotonic() + timeout
    current = snapshot(pid)
    steady_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        latest = snapshot(pid)
        if latest.children.keys() != current.children.keys() or latest.grandchildren:
            steady_since = time.monotonic()
        current = latest
        if time.monotonic() - steady_since >= steady:
            break
    return current


@dataclass(frozen=True)
class HelperCpu:
    """A direct child of the service alive at the end of the interval (a fork server): its own CPU, and that of
    the processes it reaped (keepers, with their programs)."""

    pid: int
    name: str
    own: float
    reaped: float


@dataclass(frozen=True)
class TreeCpu:
    """The CPU seconds spent between two snapshots, by who spent them."""

    user: float
    system: float
    """The process itself (every thread)."""
    descendants: float
    """Every process below it that ended or is still alive (keepers and their programs), helpers' own time excluded."""
    helpers: list[HelperCpu]

    @property
    def own(self) -> float:
        return self.user + self.system


def tree_cpu(before: TreeSnapshot, after: TreeSnapshot) -> TreeCpu:
    """What the process and its descendants spent between the two snapshots of the same process."""
    if before.process.key != after.process.key:
        raise ValueError("the snapshots are of different processes")
    # Children alive before and reaped since: their whole times are now in the parent's cutime/cstime, of which
    # the part they had already spent before does not belong to the interval.
    spent_before_by_reaped = sum(
        times.own + times.children for key, times in before.children.items() if key not in after.children
    )
    descendants = after.process.children - before.process.children - spent_before_by_reaped
    helpers: list[HelperCpu] = []
    for key, times in after.children.items():
        earlier = before.children.get(key)
        own = times.own - (earlier.own if earlier else 0.0)
        reaped = times.children - (earlier.children if earlier else 0.0)
        helpers.append(HelperCpu(pid=times.pid, name=times.name, own=own, reaped=reaped))
        descendants += reaped
    return TreeCpu(
        user=after.process.user - before.process.user,
        system=after.process.system - before.process.system,
        descendants=descendants,
        helpers=helpers,
    )
