"""The stores as the app builds them, over one engine, for tests that query them directly."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.attempt_store import AttemptStore
from service.db.connections import Database
from service.db.job_store import JobStore


@dataclass(frozen=True, slots=True)
class Stores:
    jobs: JobStore
    """What the API uses."""
    attempts: AttemptStore
    """What the supervisor and the reconciler use."""

    @classmethod
    def over(cls, engine: AsyncEngine) -> Stores:
        database = Database(engine)
        return cls(jobs=JobStore(database), attempts=AttemptStore(database))
