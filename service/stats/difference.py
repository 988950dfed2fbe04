"""A large window of /stats answered as the rollup minus what lies outside it.

Every count of the rollup is a sum over attempts (or jobs), so the counts of a window are the rollup's less those of
the attempts that started outside it (and the jobs created outside it). When the window holds most of the history
that outside is small, and reading it costs far less than scanning the window. In one snapshot (a REPEATABLE READ
transaction) the rollup plus its queues is exactly every finished attempt and every job: the queued attempts inside
the window are added, the outside attempts still queued are not subtracted, and the queued job counts are added.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.stats import discovery_sql
from service.stats.discovery import MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE
from service.stats.filters import StatsFilters
from service.stats.patterns import Pattern
from service.stats.query import ALL, CountRow, decode_rows, outside_sql, queued_sql
from service.stats.rollup import prepare_scan

DIFFERENCE_MIN_WINDOW_ATTEMPTS = 20_000
"""Below this many attempts in the window a scan is quick anyway, and exact in every figure."""
DIFFERENCE_MAX_OUTSIDE_SHARE = 0.2
"""The outside's every value is counted (a window's are sampled): past this share of the attempts outside the
window, reading the outside costs more than scanning the window."""

_ROLLUP = text(
    "SELECT program, dimension, key::text AS key, total, successes FROM stats_rollup "
    "WHERE program = :program OR CAST(:program AS text) IS NULL"
)
_QUEUED_JOBS = text("""
    SELECT program, 'jobs' AS dimension, jsonb_build_object('status', status, 'retried', retried)::text AS key,
           sum(jobs)::bigint AS total, 0::bigint AS successes
    FROM stats_rollup_pending_jobs
    WHERE program = :program OR CAST(:program AS text) IS NULL
    GROUP BY program, status, retried
""")
_ANY_QUEUED = text("SELECT EXISTS (SELECT FROM stats_rollup_pending_attempts)")
# The planner's estimates (from the statistics ANALYZE keeps) are enough to choose a side: they cost no scan.
_ESTIMATE = "EXPLAIN (FORMAT JSON) SELECT FROM attempts WHERE {where}"

Key = tuple[str, str, str]
"""(program, dimension, key as JSON text): a count row's identity (jsonb's text form is canonical)."""


@dataclass(frozen=True, slots=True)
class WindowSides:
    inside: int
    outside: int
    """Estimated attempts that started inside and outside the window (whatever the program)."""

    def prefer_difference(self, minimum_window: int) -> bool:
        everything = self.inside + self.outside
        return self.inside >= minimum_window and self.outside <= DIFFERENCE_MAX_OUTSIDE_SHARE * everything


async def estimate_sides(connection: AsyncConnection, filters: StatsFilters) -> WindowSides:
    window = StatsFilters(since=filters.since, until=filters.until)
    inside_where, parameters = window.attempt_conditions()
    outside_where, _ = window.outside_attempt_conditions()
    sides = []
    for where in (inside_where, outside_where):
        plan = (await connection.execute(text(_ESTIMATE.format(where=where)), parameters)).scalar_one()
        document = json.loads(plan) if isinstance(plan, str) else plan
        sides.append(int(document[0]["Plan"]["Plan Rows"]))
    return WindowSides(inside=sides[0], outside=sides[1])


def _combine(signed: Iterable[tuple[int, Iterable[Any]]]) -> dict[Key, list[int]]:
    counts: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for sign, rows in signed:
        for row in rows:
            total = counts[(row.program, row.dimension, row.key)]
            total[0] += sign * int(row.total)
            total[1] += sign * int(row.successes)
    return counts


@dataclass(frozen=True, slots=True)
class _Raw:
    program: str
    dimension: str
    key: str
    total: int
    successes: int


def _rows(counts: dict[Key, list[int]]) -> list[CountRow]:
    """Combined counts as CountRows, leaving out those that came to nothing (a value only the outside had)."""
    kept = [_Raw(p, d, k, total, successes) for (p, d, k), (total, successes) in counts.items() if total > 0]
    return decode_rows(kept)


def _top_values(counts: dict[Key, list[int]], minimum: float) -> list[CountRow]:
    """The TOP_VALUES most frequent values per dimension that at least `minimum` attempts of the window have: the
    rest could not be tested (service/stats/discovery.py)."""
    per_dimension: dict[str, list[tuple[Key, list[int]]]] = defaultdict(list)
    for key, figures in counts.items():
        if figures[0] >= minimum:
            per_dimension[key[1]].append((key, figures))
    chosen: dict[Key, list[int]] = {}
    for entries in per_dimension.values():
        # As a scan ranks them: ties by the JSON text, in code point order (COLLATE "C").
        entries.sort(key=lambda entry: (-entry[1][0], entry[0][2]))
        chosen.update(entries[: discovery_sql.TOP_VALUES])
    return _rows(chosen)


async def _scan_rows(connection: AsyncConnection, statement: tuple[str, dict[str, object]]) -> list[Any]:
    sql, parameters = statement
    return list((await connection.execute(text(sql), parameters)).all())


async def difference_counts(
    engine: AsyncEngine, patterns: Sequence[Pattern], filters: StatsFilters, recent_since: datetime
) -> tuple[list[CountRow], list[CountRow], list[CountRow]]:
    """The window's count rows, value rows and recent rows, from the rollup (brought up to date by the caller)."""
    async with engine.connect() as connection:
        snapshot = await connection.execution_options(isolation_level="REPEATABLE READ")
        async with snapshot.begin():
            await snapshot.execute(text("SET TRANSACTION READ ONLY"))
            await prepare_scan(snapshot)
            program = {"program": filters.program}
            rollup = list((await snapshot.execute(_ROLLUP, program)).all())
            queued_jobs = list((await snapshot.execute(_QUEUED_JOBS, program)).all())
            outside = await _scan_rows(snapshot, outside_sql(patterns, filters, recent_since))
            queued: list[Any] = []
            if (await snapshot.execute(_ANY_QUEUED)).scalar_one():
                queued = await _scan_rows(snapshot, queued_sql(patterns, filters, recent_since))
            prefixes = (discovery_sql.VALUE_PREFIX, discovery_sql.RECENT_PREFIX, discovery_sql.SAMPLE_DIMENSION)
            counts = _combine(
                [
                    (1, rollup),
                    (1, queued_jobs),
                    (1, (r for r in queued if not r.dimension.startswith(prefixes))),
                    (-1, (r for r in outside if not r.dimension.startswith(prefixes))),
                ]
            )
            finished = sum(total for (_, dimension, _), (total, _) in counts.items() if dimension == ALL)
            queued_attempts = sum(int(r.total) for r in queued if r.dimension == ALL)
            minimum = max(MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE * finished)
            # A value the window has `minimum` times has at least that many in the rollup, but for those queued and
            # the shortfall a rebuild may leave.
            shortfall = discovery_sql.REBUILD_MIN_VALUE_ATTEMPTS - 1
            parameters = {
                **discovery_sql.read_parameters(filters.program, recent_since),
                "minimum": max(1, int(minimum) - queued_attempts - shortfall),
            }
            rollup_values = list((await snapshot.execute(text(discovery_sql.READ_ROLLUP_FREQUENT), parameters)).all())
    values = [r for r in rollup_values if r.dimension.startswith(discovery_sql.VALUE_PREFIX)]
    recent = [r for r in rollup_values if r.dimension.startswith(discovery_sql.RECENT_PREFIX)]
    return (
        _rows(counts),
        _window_values(values, queued, outside, minimum, dimensions=parameters["dimensions"]),
        _rows(
            _combine(
                [
                    (1, recent),
                    (1, _of(queued, discovery_sql.RECENT_PREFIX)),
                    (-1, _of(outside, discovery_sql.RECENT_PREFIX)),
                ]
            )
        ),
    )


def _of(rows: Sequence[Any], prefix: str) -> list[Any]:
    return [r for r in rows if r.dimension.startswith(prefix)]


def _window_values(
    rollup_values: Sequence[Any],
    queued: Sequence[Any],
    outside: Sequence[Any],
    minimum: float,
    *,
    dimensions: object,
) -> list[CountRow]:
    """The values of `dimensions` the rollup has at least about `minimum` times, or the queue has, less the
    outside's (with a program filter, the program is not a dimension: it has one value)."""
    queued_values, outside_values = _of(queued, discovery_sql.VALUE_PREFIX), _of(outside, discovery_sql.VALUE_PREFIX)
    wanted = {f"{discovery_sql.VALUE_PREFIX}{d}" for d in dimensions} if isinstance(dimensions, list) else set()
    candidates = {(r.program, r.dimension, r.key) for r in (*rollup_values, *queued_values) if r.dimension in wanted}
    counts = _combine([(1, rollup_values), (1, queued_values), (-1, outside_values)])
    return _top_values({key: figures for key, figures in counts.items() if key in candidates}, minimum)
