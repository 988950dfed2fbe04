"""compute_stats: the whole /stats answer, from the rollup when it can serve the request, else from one scan."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.connections import unavailable_when_transient
from service.stats.filters import StatsFilters
from service.stats.patterns import PATTERNS, Pattern
from service.stats.report import StatsReport, build_report
from service.stats.rollup import QUEUE_TABLES, read_rollup, refresh_rollup, scan_counts

logger = logging.getLogger(__name__)

ROLLUP = "rollup"
SCAN = "scan"


async def compute_stats(
    engine: AsyncEngine, filters: StatsFilters | None = None, patterns: Sequence[Pattern] = PATTERNS
) -> StatsReport:
    """Every figure of /stats. No filter, or only `program`: the rollup. A window or a name prefix: a scan.

    A database that is unreachable or restarting raises `DatabaseUnavailableError`, as the stores do.
    """
    filters = filters or StatsFilters()
    async with unavailable_when_transient():
        if filters.needs_scan:
            async with engine.connect() as connection:
                rows = await scan_counts(connection, patterns, filters)
            return build_report(rows, patterns, computed_from=SCAN)
        async with engine.begin() as connection:
            refresh = await refresh_rollup(connection, patterns)
            rows = await read_rollup(connection, filters.program)
    if refresh.rebuilt:
        await vacuum_queues(engine)
    return build_report(rows, patterns, computed_from=ROLLUP)


async def vacuum_queues(engine: AsyncEngine) -> None:
    """Reclaim the queue rows a rebuild deleted (a million after a bulk load) now, not when autovacuum comes by:
    until then every request would read through them."""
    try:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text(f"VACUUM (ANALYZE) {', '.join(QUEUE_TABLES)}"))
    except DBAPIError as error:  # not the tables' owner, say: autovacuum will do it later
        logger.warning("could not vacuum the /stats queues after a rebuild: %s", error)
