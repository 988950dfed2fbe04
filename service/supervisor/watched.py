"""What the supervisor keeps of each process it watches, and how an attempt it ended itself is recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from service.domain.limits import NO_LIMITS, JobLimits
from service.domain.records import AttemptEnding
from service.domain.status import AttemptOutcome
from service.runner.launcher import RunningProcess
from service.supervisor.endings import AttemptKey
from service.supervisor.observer import UNKNOWN_PROGRAM


@dataclass(slots=True, eq=False)
class Watched:
    """A process this node watches, and whether (and why) the service is ending it."""

    key: AttemptKey
    process: RunningProcess
    program_name: str = UNKNOWN_PROGRAM
    stop_reason: AttemptOutcome | None = None
    """CANCELLED or TIMED_OUT once the service has decided to end it; the outcome it will be recorded with."""
    stop_detail: str | None = None
    stop_started: float | None = None
    """Event-loop time of the SIGTERM."""
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    limits: JobLimits = NO_LIMITS
    """What its program runs under: an ending that hit one of them says so."""
    abandoned_here: bool = False
    """This supervisor gave up on it before its go-ahead: its program never ran, whatever its keeper could write."""


def as_stopped(watched: Watched, ending: AttemptEnding) -> AttemptEnding:
    """An attempt the service ended is recorded as cancelled or timed out, whatever the signal made of it (a
    program that catches SIGTERM and exits 0 was cancelled all the same); the exit code and signal stay as seen."""
    if watched.stop_reason is None or ending.outcome is AttemptOutcome.SPAWN_FAILED:
        return ending
    detail = watched.stop_detail
    if ending.outcome is AttemptOutcome.LOST:
        detail = f"{detail}; then {ending.error}"
    return replace(ending, outcome=watched.stop_reason, error=detail)
