"""A name prefix answered from the rollup's name families gives exactly what a scan of the prefix gives: on a seeded
history with more names crafted around it (several families sharing a prefix, LIKE metacharacters in names), before
and after more attempts and jobs arrive (queued, then folded), and a prefix a family cannot answer is scanned."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import seed_history
from service.domain.status import JobStatus
from service.stats.compute import BY_FAMILY, SCAN, compute_stats, recent_window_start
from service.stats.discovery import DEFAULT_RECENT, MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE
from service.stats.discovery_sql import RECENT_PREFIX, SAMPLE_DIMENSION, VALUE_PREFIX
from service.stats.families import answered_by_family, read_family_rollup
from service.stats.filters import StatsFilters
from service.stats.patterns import PATTERNS
from service.stats.query import ALL, CountRow
from service.stats.report import StatsReport
from service.stats.rollup import refresh_rollup, scan_counts
from tests.support.stats_history import CraftedAttempt, CraftedJob, F, S, insert_jobs, use_utc

SEEDED_ATTEMPTS = 3000
OTHER_PROGRAM = "/opt/jobs/other.py"
DONE, CRASHED = JobStatus.COMPLETED, JobStatus.CRASHED
# "t" is the seeded families task and thumb, and the crafted tasker and taskX; "ab%" must match ab%c only, not abXc
# (% taken literally); "a\\" matches a\b only.
PREFIXES = ("task", "t", "tasker", "ab%", "a\\", "nightly", "zzz")


def _crafted(at: datetime) -> list[CraftedJob]:
    recently, long_ago = at - timedelta(hours=2), at - timedelta(days=12)

    def attempts(count: int, started: datetime) -> list[CraftedAttempt]:
        return [CraftedAttempt(S if i % 3 else F, 30 + i, started + timedelta(minutes=i)) for i in range(count)]

    return [
        *(CraftedJob(f"tasker-{i}", ["--full"], DONE, attempts(2, long_ago)) for i in range(15)),
        *(
            CraftedJob(f"tasker{i}", ["--full"], CRASHED, attempts(2, recently), program=OTHER_PROGRAM)
            for i in range(12)
        ),
        CraftedJob("taskX", ["--quick"], DONE, attempts(3, recently)),
        *(CraftedJob(f"ab%c-{i}", ["x"], DONE, attempts(1, long_ago)) for i in range(25)),
        *(CraftedJob(f"abXc-{i}", ["x"], CRASHED, attempts(1, long_ago)) for i in range(25)),
        CraftedJob("a\\b", [], DONE, attempts(2, recently)),
        CraftedJob("aXb", [], DONE, attempts(2, recently)),
        CraftedJob("task-waiting", [], JobStatus.QUEUED),
        CraftedJob("tasker-waiting", [], JobStatus.QUEUED, program=OTHER_PROGRAM),
    ]


def _comparable(rows: list[CountRow]) -> Counter[tuple[str, str, str, int, int]]:
    return Counter((r.program, r.dimension, repr(r.key), r.total, r.successes) for r in rows if r.total)


async def _both_ways(engine: AsyncEngine, prefix: str, now: datetime) -> None:
    filters = StatsFilters(name_prefix=prefix)
    assert answered_by_family(filters)
    recent_since = recent_window_start(filters, DEFAULT_RECENT, now, whole_hours=True)
    async with engine.connect() as connection:
        scanned = await scan_counts(connection, PATTERNS, filters, recent_since)
    async with engine.begin() as connection:
        await refresh_rollup(connection, PATTERNS)
        rows, values, recent = await read_family_rollup(connection, prefix, recent_since)

    kinds = (VALUE_PREFIX, RECENT_PREFIX, SAMPLE_DIMENSION)
    assert _comparable(rows) == _comparable([r for r in scanned if not r.dimension.startswith(kinds)]), prefix
    assert _comparable(recent) == _comparable([r for r in scanned if r.dimension.startswith(RECENT_PREFIX)]), prefix
    [sample] = [r for r in scanned if r.dimension == SAMPLE_DIMENSION]
    finished = sum(r.total for r in rows if r.dimension == ALL)
    assert sample.total == finished
    # The values that could be tested (the scan counts every value here: the prefix is far below its sample size).
    minimum = max(MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE * finished)
    testable = [r for r in scanned if r.dimension.startswith(VALUE_PREFIX) and r.total >= minimum]
    assert _comparable([r for r in values if r.total >= minimum]) == _comparable(testable), prefix


@pytest.fixture
async def seeded(engine: AsyncEngine) -> datetime:
    await use_utc(engine)
    await seed_history(engine, SEEDED_ATTEMPTS, seed=3, days=30)  # ends with a rebuild of the rollup
    now = datetime.now(UTC)
    await insert_jobs(engine, _crafted(now))
    async with engine.begin() as connection:
        await refresh_rollup(connection, PATTERNS)  # folds the crafted jobs
    return now


async def test_the_families_of_a_prefix_equal_a_scan_of_it(engine: AsyncEngine, seeded: datetime) -> None:
    for prefix in PREFIXES:
        await _both_ways(engine, prefix, seeded)


async def test_attempts_and_jobs_still_queued_are_counted_once(engine: AsyncEngine, seeded: datetime) -> None:
    # Finished after the last fold: queued until the family read folds them first.
    await insert_jobs(
        engine,
        [
            CraftedJob("tasker-late", ["--full"], DONE, [CraftedAttempt(F, 40, seeded - timedelta(hours=1))]),
            CraftedJob("taskY", [], CRASHED, [CraftedAttempt(F, 40, seeded - timedelta(days=3))]),
            CraftedJob("tasker-queued", [], JobStatus.QUEUED),
        ],
    )
    for prefix in PREFIXES:
        await _both_ways(engine, prefix, seeded)


def _figures(report: StatsReport) -> dict[str, object]:
    assert report.discovery is not None
    return {
        "totals": (report.total_jobs, report.finished_attempts, report.successful_attempts, report.decided_jobs),
        "jobs": (report.completed_jobs, report.crashed_jobs, report.rescued_jobs, report.crashed_after_retries),
        # Not the adjusted p-values, nor the findings they rank: a scan's recent window does not start at a whole hour,
        # so its change findings, hypotheses of the same correction, may differ (the value counts are compared above).
        "patterns": sorted((p.pattern.id, p.match_count, p.success_count, p.others_count) for p in report.patterns),
        "breakdowns": (report.outcomes, report.programs, report.nodes, report.hours_of_day, report.name_families),
        "what_if": report.what_if,
        "flaky": report.flaky_names,
    }


async def test_a_prefix_of_letters_is_answered_from_the_families(engine: AsyncEngine, seeded: datetime) -> None:
    for prefix in ("task", "t"):
        filters = StatsFilters(name_prefix=prefix)
        by_family = await compute_stats(engine, filters, now=seeded)
        scan = await compute_stats(engine, filters, now=seeded, by_family=False)
        assert (by_family.computed_from, scan.computed_from) == (BY_FAMILY, SCAN)
        assert by_family.discovery is not None
        assert not by_family.discovery.value_sampled
        assert _figures(by_family) == _figures(scan)
        assert by_family.total_jobs > 0


async def test_a_prefix_a_family_cannot_answer_is_scanned(engine: AsyncEngine, seeded: datetime) -> None:
    # A digit or a separator can end a family inside the prefix; a program or a window narrows it further.
    for filters in (
        StatsFilters(name_prefix="task-1"),
        StatsFilters(name_prefix="tasker1"),
        StatsFilters(name_prefix="ab%c_"),
        StatsFilters(name_prefix="task", program=OTHER_PROGRAM),
        StatsFilters(name_prefix="task", since=seeded - timedelta(days=3650)),
    ):
        assert not answered_by_family(filters)
        report = await compute_stats(engine, filters, now=seeded, difference_min_window_attempts=100)
        assert report.computed_from == SCAN, filters
