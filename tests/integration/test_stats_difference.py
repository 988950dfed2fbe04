"""A large window answered as the rollup minus the attempts outside it gives exactly what a scan of the window gives:
on a seeded history, for windows by `since`, `until`, both, and with a program, with and without attempts and jobs
still queued (finished since the last fold, inside and outside the window)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import seed_history
from service.domain.status import JobStatus
from service.stats.compute import DIFFERENCE, SCAN, compute_stats, recent_window_start
from service.stats.difference import difference_counts
from service.stats.discovery import DEFAULT_RECENT, MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE
from service.stats.discovery_sql import RECENT_PREFIX, SAMPLE_DIMENSION, VALUE_PREFIX
from service.stats.filters import StatsFilters
from service.stats.patterns import PATTERNS
from service.stats.query import ALL, CountRow
from service.stats.report import StatsReport
from service.stats.rollup import scan_counts
from tests.support.stats_history import CraftedAttempt, CraftedJob, F, S, insert_jobs, use_utc

SEEDED_ATTEMPTS = 3000
SEEDED_PROGRAM = "/opt/jobs/report.py"
DONE = JobStatus.COMPLETED


def _windows(now: datetime) -> list[StatsFilters]:
    return [
        StatsFilters(since=now - timedelta(days=3650)),
        StatsFilters(since=now - timedelta(days=20)),
        StatsFilters(until=now - timedelta(days=2)),
        StatsFilters(since=now - timedelta(days=25), until=now - timedelta(hours=30)),
        StatsFilters(since=now - timedelta(days=10), program=SEEDED_PROGRAM),
    ]


def _comparable(rows: list[CountRow]) -> Counter[tuple[str, str, str, int, int]]:
    return Counter((r.program, r.dimension, repr(r.key), r.total, r.successes) for r in rows if r.total)


async def _both_ways(engine: AsyncEngine, filters: StatsFilters, now: datetime) -> None:
    recent_since = recent_window_start(filters, DEFAULT_RECENT, now, whole_hours=True)
    async with engine.connect() as connection:
        scanned = await scan_counts(connection, PATTERNS, filters, recent_since)
    rows, values, recent = await difference_counts(engine, PATTERNS, filters, recent_since)

    kinds = (VALUE_PREFIX, RECENT_PREFIX, SAMPLE_DIMENSION)
    assert _comparable(rows) == _comparable([r for r in scanned if not r.dimension.startswith(kinds)]), filters
    assert _comparable(recent) == _comparable([r for r in scanned if r.dimension.startswith(RECENT_PREFIX)])
    # The scan counts every value here (the window is far below its sample size); the difference lists the values
    # that could be tested, those that at least the minimum support of attempts have.
    [sample] = [r for r in scanned if r.dimension == SAMPLE_DIMENSION]
    finished = sum(r.total for r in rows if r.dimension == ALL)
    assert sample.total == finished > 0
    minimum = max(MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE * finished)
    # With a program, the program is no dimension to test: it has one value.
    ignored = f"{VALUE_PREFIX}program" if filters.program else None
    testable = [
        r for r in scanned if r.dimension.startswith(VALUE_PREFIX) and r.dimension != ignored and r.total >= minimum
    ]
    assert _comparable(values) == _comparable(testable), filters
    assert values


@pytest.fixture
async def seeded(engine: AsyncEngine) -> datetime:
    await use_utc(engine)
    await seed_history(engine, SEEDED_ATTEMPTS, seed=3, days=30)  # ends with a rebuild of the rollup
    return datetime.now(UTC)


async def test_the_rollup_minus_the_outside_equals_a_scan_of_the_window(engine: AsyncEngine, seeded: datetime) -> None:
    for filters in _windows(seeded):
        await _both_ways(engine, filters, seeded)


async def test_attempts_and_jobs_still_queued_are_counted_once(engine: AsyncEngine, seeded: datetime) -> None:
    # Finished after the last fold: queued, inside and outside the windows, one of them of the seeded program.
    recently, long_ago = seeded - timedelta(hours=3), seeded - timedelta(days=28)
    await insert_jobs(
        engine,
        [
            CraftedJob("late-1", ["--full"], DONE, [CraftedAttempt(F, 40, recently), CraftedAttempt(S, 50, recently)]),
            CraftedJob("late-2", [], DONE, [CraftedAttempt(S, 2000, long_ago)]),
            CraftedJob("late-3", ["x"], DONE, [CraftedAttempt(S, 10, recently)], program=SEEDED_PROGRAM),
            CraftedJob("waiting", [], JobStatus.QUEUED),
        ],
    )
    for filters in _windows(seeded):
        await _both_ways(engine, filters, seeded)


def _figures(report: StatsReport) -> dict[str, object]:
    assert report.discovery is not None
    return {
        "totals": (report.total_jobs, report.finished_attempts, report.successful_attempts, report.decided_jobs),
        # Not the adjusted p-values, nor the findings they rank: a scan's recent window does not start at a whole hour,
        # so its change findings, hypotheses of the same correction, may differ (the value counts are compared above).
        "patterns": sorted((p.pattern.id, p.match_count, p.success_count, p.others_count) for p in report.patterns),
        "breakdowns": (report.outcomes, report.programs, report.nodes, report.hours_of_day, report.name_families),
        "what_if": report.what_if,
        "flaky": report.flaky_names,
    }


async def test_a_request_for_most_of_the_history_is_answered_from_the_rollup(
    engine: AsyncEngine, seeded: datetime
) -> None:
    filters = StatsFilters(since=seeded - timedelta(days=3650))
    difference = await compute_stats(engine, filters, now=seeded, difference_min_window_attempts=100)
    scan = await compute_stats(engine, filters, now=seeded, difference_min_window_attempts=SEEDED_ATTEMPTS * 10)

    assert (difference.computed_from, scan.computed_from) == (DIFFERENCE, SCAN)
    assert difference.discovery is not None
    assert not difference.discovery.value_sampled
    assert _figures(difference) == _figures(scan)
    # A small part of the history is scanned: reading the rest would cost more.
    small = StatsFilters(since=seeded - timedelta(days=2))
    assert (await compute_stats(engine, small, now=seeded, difference_min_window_attempts=100)).computed_from == SCAN
