"""What the controllers are given: built once in the app's lifespan and kept in the app's state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from litestar.datastructures import State
from litestar.di import Provide

from service.api.back_pressure import QueueGauge
from service.db.job_store import JobStore
from service.domain.limits import NO_LIMITS, JobLimits


@runtime_checkable  # Litestar checks injected values with isinstance()
class SupervisorHandle(Protocol):
    """What the API may ask of the supervisor; the API never drives it otherwise."""

    @property
    def node_id(self) -> str: ...

    @property
    def running_count(self) -> int: ...

    @property
    def claim_loop_running(self) -> bool: ...

    def wake(self) -> None: ...


@runtime_checkable
class NodeLease(Protocol):
    """This node's lease, as /ready reports it."""

    def lease_seconds_left(self) -> float | None:
        """Seconds its programs may still run on the last renewal (negative once lapsed); None without a lease."""
        ...


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What a submitted job may choose from, and what it gets when the request does not say."""

    programs: Mapping[str, Path]
    """Every program a job may name (`default` is JOB_SCRIPT_PATH), to its absolute path."""
    max_attempts: int
    timeout_seconds: float | None = None
    limits: JobLimits = NO_LIMITS
    """What a job that asks for no limits gets, and the most one may ask for."""


@dataclass(frozen=True, slots=True)
class OutputAccess:
    """Where this node keeps the output of the attempts it ran, and how much of it the attempt rows hold."""

    output_dir: Path
    node_id: str
    tail_bytes: int


@dataclass(frozen=True, slots=True)
class JobIntake:
    """What POST /jobs needs, as one dependency: Litestar resolves several dependencies of one handler in a task
    group, a task for each, on every request."""

    job_store: JobStore
    supervisor: SupervisorHandle
    defaults: JobDefaults
    queue_gauge: QueueGauge
    count_accepted: Callable[[], None]
    """Counts a job stored (answered 201) in the service's metrics."""


def from_state(name: str) -> Provide:
    """A dependency that hands out what the lifespan put in the app's state under `name`."""

    def provide(state: State) -> object:
        return state[name]

    return Provide(provide, sync_to_thread=False)
