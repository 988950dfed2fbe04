"""Keeping /stats fast at a million attempts: the rollup, folded incrementally and rebuilt from a full scan when stale.

Triggers (migration 0002) queue each attempt as it finishes, and each job as it is inserted or deleted, in the
writer's own transaction. `refresh_rollup` folds those queues into `stats_rollup` under an advisory lock, in one
statement whose snapshot both consumes the queue and reads the attempts, so nothing is counted twice or missed. It
rebuilds from scratch instead when an invalidation was queued (an edited or deleted finished attempt, a renamed job)
or when the rollup was built for other patterns, another attempt_facts definition or another TimeZone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.stats.discovery_sql import CLEAR_ROLLUP as CLEAR_VALUE_ROLLUP
from service.stats.filters import StatsFilters
from service.stats.patterns import Pattern
from service.stats.query import CountRow, decode_rows, registry_fingerprint, scan_sql
from service.stats.rollup_sql import fold_sql, rebuild_sql

# Any fixed number: the /stats requests of every node take turns folding the queues.
ROLLUP_LOCK_KEY = 5_716_220_431
# A rebuild aggregates every attempt at once; more memory than the default 4 MB keeps it off the disk, and lets the
# planner hash every grouping set of its one pass (below that, it sorts the million facts once per few sets). What
# it really takes is what the counts need: a few tens of MB at a million attempts.
REBUILD_WORK_MEM = "128MB"
SCAN_WORK_MEM = "32MB"

QUEUE_TABLES = ("stats_rollup_pending_attempts", "stats_rollup_pending_jobs", "stats_rollup_invalidations")

# Folding looks each queued attempt up on its own; past this many, and past this share of the attempts already
# counted, one full scan is cheaper (after a bulk load, or a long time without a /stats request).
REBUILD_PENDING_MINIMUM = 50_000
REBUILD_PENDING_SHARE = 0.25

_STATE = text("""
    SELECT (SELECT fingerprint FROM stats_rollup_state) AS stored,
           md5(pg_get_viewdef('attempt_facts'::regclass) || current_setting('TimeZone')) AS database_part,
           EXISTS (SELECT 1 FROM stats_rollup_invalidations) AS invalidated,
           (SELECT count(*) FROM (SELECT FROM stats_rollup_pending_attempts LIMIT :minimum) AS p) AS pending,
           EXISTS (SELECT 1 FROM stats_rollup_pending_jobs) AS jobs_pending,
           (SELECT coalesce(sum(total), 0)::bigint FROM stats_rollup WHERE dimension = 'all') AS counted
""")
_READ_ALL = text("SELECT program, dimension, key::text AS key, total, successes FROM stats_rollup")
_READ_PROGRAM = text(
    "SELECT program, dimension, key::text AS key, total, successes FROM stats_rollup WHERE program = :program"
)
_SAVE_STATE = text("""
    INSERT INTO stats_rollup_state (fingerprint, built_at) VALUES (:fingerprint, now())
    ON CONFLICT (singleton) DO UPDATE SET fingerprint = excluded.fingerprint, built_at = excluded.built_at
""")


@dataclass(frozen=True, slots=True)
class Refresh:
    rebuilt: bool
    seconds: float


async def refresh_rollup(
    connection: AsyncConnection, patterns: Sequence[Pattern], *, rebuild_pending_minimum: int = REBUILD_PENDING_MINIMUM
) -> Refresh:
    """Bring the rollup up to date inside the caller's transaction (which then reads it, or commits)."""
    started = time.perf_counter()
    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLLUP_LOCK_KEY})
    # These statements look big to the planner (stale estimates of the queues) but touch few rows: compiling them
    # with JIT would cost more than running them.
    await connection.execute(text("SET LOCAL jit = off"))
    # A statement of its own, after the lock: it must see what the previous holder committed.
    state = (await connection.execute(_STATE, {"minimum": rebuild_pending_minimum})).one()
    fingerprint = f"{registry_fingerprint(patterns)}:{state.database_part}"
    many_pending = state.pending >= rebuild_pending_minimum and state.pending > REBUILD_PENDING_SHARE * state.counted
    rebuild = state.invalidated or state.stored != fingerprint or many_pending
    if rebuild:
        await connection.execute(text(f"SET LOCAL work_mem = '{REBUILD_WORK_MEM}'"))
        await connection.execute(text("DELETE FROM stats_rollup"))
        for statement in CLEAR_VALUE_ROLLUP:
            await connection.execute(text(statement))
        await connection.execute(text(rebuild_sql(patterns)))
        await connection.execute(_SAVE_STATE, {"fingerprint": fingerprint})
    elif state.pending or state.jobs_pending:
        await connection.execute(text(fold_sql(patterns)))
    return Refresh(rebuilt=rebuild, seconds=time.perf_counter() - started)


async def read_rollup(connection: AsyncConnection, program: str | None) -> list[CountRow]:
    result = await connection.execute(_READ_ALL if program is None else _READ_PROGRAM, {"program": program})
    return decode_rows(result.all())


async def scan_counts(
    connection: AsyncConnection, patterns: Sequence[Pattern], filters: StatsFilters, recent_since: datetime
) -> list[CountRow]:
    await prepare_scan(connection)
    sql, parameters = scan_sql(patterns, filters, recent_since)
    result = await connection.execute(text(sql), parameters)
    return decode_rows(result.all())


async def prepare_scan(connection: AsyncConnection) -> None:
    """Settings for the statements that read a window's attempts, for the caller's transaction: no JIT (compiling
    the few hundred expressions of such a statement takes longer than the expressions do), and the memory to keep
    its facts and hash tables off the disk."""
    await connection.execute(text("SET LOCAL jit = off"))
    await connection.execute(text(f"SET LOCAL work_mem = '{SCAN_WORK_MEM}'"))
