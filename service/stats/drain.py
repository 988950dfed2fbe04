"""Folding the /stats queues into the rollup without a request: what keeps them short however long nobody asks for
/stats (one node at a time; the others find the lock taken and leave it to the holder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.compute import vacuum_queues
from service.stats.patterns import PATTERNS, Pattern
from service.stats.rollup import QUEUE_TABLES, ROLLUP_LOCK_KEY, refresh_rollup

# The queue tables are the module's own constants, never input.
_QUEUED = text("SELECT " + " + ".join(f"(SELECT count(*) FROM {table})" for table in QUEUE_TABLES))  # noqa: S608


@dataclass(frozen=True, slots=True)
class DrainReport:
    drained: int
    """Queue rows folded (or made moot by a rebuild)."""
    rebuilt: bool
    skipped: bool
    """Another node (or a /stats request) held the rollup's lock: nothing was done this time."""


async def drain_queues(engine: AsyncEngine, patterns: Sequence[Pattern] = PATTERNS) -> DrainReport:
    """Fold what the queues hold into the rollup now, unless another node or a /stats request is doing it."""
    async with engine.begin() as connection:
        # Never waits: whoever holds the lock is folding the same queues right now.
        locked = await connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK_KEY})
        if not locked.scalar_one():
            return DrainReport(drained=0, rebuilt=False, skipped=True)
        queued = int((await connection.execute(_QUEUED)).scalar_one())
        if queued == 0:
            return DrainReport(drained=0, rebuilt=False, skipped=False)
        refresh = await refresh_rollup(connection, patterns)
    if refresh.rebuilt:
        await vacuum_queues(engine)
    return DrainReport(drained=queued, rebuilt=refresh.rebuilt, skipped=False)
