"""compute_stats: the whole /stats answer, from the rollup when it can serve the request, else from one scan."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.connections import unavailable_when_transient
from service.stats import discovery_sql
from service.stats.difference import DIFFERENCE_MIN_WINDOW_ATTEMPTS, difference_counts, estimate_sides
from service.stats.discovery import DEFAULT_RECENT, test_all
from service.stats.filters import StatsFilters
from service.stats.findings import FINDINGS_LIMIT, Discovery
from service.stats.overlap import candidates, count_overlaps, resolve, rollup_overlaps, sample_share
from service.stats.patterns import PATTERNS, Pattern
from service.stats.query import CountRow, decode_rows
from service.stats.report import StatsReport, build_report
from service.stats.rollup import QUEUE_TABLES, prepare_scan, read_rollup, refresh_rollup, scan_counts
from service.stats.summary import summarize

logger = logging.getLogger(__name__)

ROLLUP = "rollup"
SCAN = "scan"
DIFFERENCE = "rollup-minus-outside"


def recent_window_start(filters: StatsFilters, recent: timedelta, now: datetime, *, whole_hours: bool) -> datetime:
    """The recent window ends at `until` (or now) and lasts `recent`; the rollup counts by the hour, so from it the
    window starts at the whole hour at or before (it may be up to an hour longer)."""
    end = min(filters.until, now) if filters.until is not None else now
    start = end - recent
    if whole_hours:
        start = datetime.fromtimestamp(start.timestamp() // 3600 * 3600, tz=UTC)
    return start


async def _read_value_rollup(
    connection: AsyncConnection, program: str | None, recent_since: datetime
) -> list[CountRow]:
    result = await connection.execute(
        text(discovery_sql.READ_ROLLUP), discovery_sql.read_parameters(program, recent_since)
    )
    return decode_rows(result.all())


def _split(rows: Sequence[CountRow]) -> tuple[list[CountRow], list[CountRow], list[CountRow], tuple[int, int] | None]:
    """The rollup's rows, the value rows, the recent rows, and the (attempts, successes) of a scan's value sample."""
    values = [r for r in rows if r.dimension.startswith(discovery_sql.VALUE_PREFIX)]
    recent = [r for r in rows if r.dimension.startswith(discovery_sql.RECENT_PREFIX)]
    samples = [(r.total, r.successes) for r in rows if r.dimension == discovery_sql.SAMPLE_DIMENSION]
    rest = [
        r
        for r in rows
        if r.dimension != discovery_sql.SAMPLE_DIMENSION
        and not r.dimension.startswith((discovery_sql.VALUE_PREFIX, discovery_sql.RECENT_PREFIX))
    ]
    return rest, values, recent, samples[0] if samples else None


async def compute_stats(
    engine: AsyncEngine,
    filters: StatsFilters | None = None,
    patterns: Sequence[Pattern] = PATTERNS,
    *,
    recent: timedelta = DEFAULT_RECENT,
    now: datetime | None = None,
    difference_min_window_attempts: int = DIFFERENCE_MIN_WINDOW_ATTEMPTS,
) -> StatsReport:
    """Every figure of /stats. No filter, or only `program`: the rollup. A window holding most of the attempts
    (and no name prefix): the rollup minus the attempts outside it. Any other window or a name prefix: a scan.

    A database that is unreachable or restarting raises `DatabaseUnavailableError`, as the stores do.
    """
    filters = filters or StatsFilters()
    moment = now or datetime.now(UTC)
    async with unavailable_when_transient():
        source = await choose_source(engine, filters, difference_min_window_attempts)
        recent_since = recent_window_start(filters, recent, moment, whole_hours=source != SCAN)
        return await _compute(engine, filters, patterns, recent, recent_since, source=source)


async def choose_source(engine: AsyncEngine, filters: StatsFilters, difference_min_window_attempts: int) -> str:
    """ROLLUP, DIFFERENCE or SCAN: whichever reads the fewest attempts for this request."""
    if not filters.needs_scan:
        return ROLLUP
    if filters.name_prefix is not None:
        return SCAN
    async with engine.connect() as connection:
        sides = await estimate_sides(connection, filters)
    return DIFFERENCE if sides.prefer_difference(difference_min_window_attempts) else SCAN


async def _refreshed_rollup(engine: AsyncEngine, patterns: Sequence[Pattern]) -> None:
    async with engine.begin() as connection:
        refresh = await refresh_rollup(connection, patterns)
    if refresh.rebuilt:
        await vacuum_queues(engine)


async def _compute(
    engine: AsyncEngine,
    filters: StatsFilters,
    patterns: Sequence[Pattern],
    recent: timedelta,
    recent_since: datetime,
    *,
    source: str,
) -> StatsReport:
    value_sample: tuple[int, int] | None = None
    if source == SCAN:
        async with engine.connect() as connection:
            scanned = await scan_counts(connection, patterns, filters, recent_since)
        rows, value_rows, recent_rows, value_sample = _split(scanned)
    elif source == DIFFERENCE:
        await _refreshed_rollup(engine, patterns)
        rows, value_rows, recent_rows = await difference_counts(engine, patterns, filters, recent_since)
    else:
        async with engine.begin() as connection:
            refresh = await refresh_rollup(connection, patterns)
            rows = await read_rollup(connection, filters.program)
            _, value_rows, recent_rows, _ = _split(await _read_value_rollup(connection, filters.program, recent_since))
        if refresh.rebuilt:
            await vacuum_queues(engine)
    report = build_report(rows, patterns, computed_from=source)
    value_attempts = report.finished_attempts if value_sample is None else value_sample[0]
    ranked, report_patterns = test_all(report, value_rows, recent_rows, recent, value_sample)
    chosen = candidates(ranked)
    if filters.needs_scan:
        async with engine.connect() as connection:
            await prepare_scan(connection)
            overlaps = await count_overlaps(connection, chosen, filters, report.finished_attempts)
        counted_at = report.finished_attempts
    else:
        async with engine.begin() as connection:
            overlaps, counted_at = await rollup_overlaps(connection, chosen, filters.program, report.finished_attempts)
    findings = resolve(ranked, chosen, overlaps)[:FINDINGS_LIMIT]
    hypotheses = len(ranked)
    discovery = Discovery(
        findings=findings,
        summary=summarize(
            findings,
            finished_attempts=report.finished_attempts,
            overall_success_rate=report.overall_success_rate,
            hypotheses=hypotheses,
        ),
        hypotheses_tested=hypotheses,
        recent=recent,
        recent_since=recent_since,
        overlap_attempts=overlaps.attempts,
        overlap_sampled=sample_share(report.finished_attempts) is not None,
        overlap_based_on_attempts=counted_at,
        value_attempts=value_attempts,
        value_sampled=value_attempts < report.finished_attempts,
    )
    return dataclasses.replace(report, patterns=report_patterns, discovery=discovery)


async def vacuum_queues(engine: AsyncEngine) -> None:
    """Reclaim the rows a rebuild deleted (a million queued attempts after a bulk load, every value counted before)
    now, not when autovacuum comes by: until then every request would read through them, and each rebuild would
    grow the value tables by their whole size. That also gives the planner the rebuilt value tables' statistics:
    freshly rebuilt, they look empty to it, and it then sorts a whole dimension instead of reading its most frequent
    values off the index."""
    try:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            tables = (*QUEUE_TABLES, *discovery_sql.VALUE_TABLES, discovery_sql.OVERLAP_TABLE)
            await autocommit.execute(text(f"VACUUM (ANALYZE) {', '.join(tables)}"))
    except DBAPIError as error:  # not the tables' owner, say: autovacuum will do it later
        logger.warning("could not vacuum the /stats queues after a rebuild: %s", error)
