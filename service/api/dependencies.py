"""What the controllers are given: built once in the app's lifespan and kept in the app's state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.repository import Repository


@runtime_checkable  # Litestar checks injected values with isinstance()
class SupervisorHandle(Protocol):
    """What the API may ask of the supervisor; the API never drives it otherwise."""

    @property
    def node_id(self) -> str: ...

    @property
    def running_count(self) -> int: ...

    def wake(self) -> None: ...


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What a submitted job gets when the request does not say."""

    program: Path
    max_attempts: int


def provide_repository(state: State) -> Repository:
    repository: Repository = state.repository
    return repository


def provide_supervisor(state: State) -> SupervisorHandle:
    supervisor: SupervisorHandle = state.supervisor
    return supervisor


def provide_job_defaults(state: State) -> JobDefaults:
    defaults: JobDefaults = state.job_defaults
    return defaults


def provide_engine(state: State) -> AsyncEngine:
    engine: AsyncEngine = state.engine
    return engine
