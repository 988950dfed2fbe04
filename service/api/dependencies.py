"""What the controllers are given: built once in the app's lifespan and kept in the app's state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.repository import Repository
from service.supervisor.supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """What a submitted job gets when the request does not say."""

    program: Path
    max_attempts: int


def provide_repository(state: State) -> Repository:
    repository: Repository = state.repository
    return repository


def provide_supervisor(state: State) -> Supervisor:
    supervisor: Supervisor = state.supervisor
    return supervisor


def provide_job_defaults(state: State) -> JobDefaults:
    defaults: JobDefaults = state.job_defaults
    return defaults


def provide_engine(state: State) -> AsyncEngine:
    engine: AsyncEngine = state.engine
    return engine
