"""Evaluating every pattern in one SQL statement (FILTER aggregates over `attempt_facts`) and shaping the result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.patterns import PATTERNS, Pattern


@dataclass(frozen=True, slots=True)
class PatternResult:
    pattern: Pattern
    match_count: int
    success_count: int

    @property
    def success_rate(self) -> float:
        return self.success_count / self.match_count if self.match_count else 0.0


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    total_jobs: int
    finished_attempts: int
    successful_attempts: int
    patterns: list[PatternResult]

    @property
    def overall_success_rate(self) -> float:
        return self.successful_attempts / self.finished_attempts if self.finished_attempts else 0.0


def build_stats_sql(patterns: Sequence[Pattern]) -> str:
    """One SELECT: the totals, then a match count and a success count per pattern."""
    per_pattern = ",\n".join(
        f"count(*) FILTER (WHERE {p.condition}) AS {p.id}_matches,\n"
        f"count(*) FILTER (WHERE ({p.condition}) AND succeeded) AS {p.id}_successes"
        for p in patterns
    )
    return f"""
        SELECT
            (SELECT count(*) FROM jobs) AS total_jobs,
            count(*) AS finished_attempts,
            count(*) FILTER (WHERE succeeded) AS successful_attempts,
            {per_pattern}
        FROM attempt_facts
    """


def difference_from_average(rate: float, average: float) -> str:
    """The relative difference as a signed whole percent: 0.83 against 0.72 is "+15%"."""
    if average == 0:
        return "0%"
    percent = round((rate - average) / average * 100)
    return f"{percent:+d}%" if percent else "0%"


async def compute_stats(engine: AsyncEngine, patterns: Sequence[Pattern] = PATTERNS) -> StatsSnapshot:
    async with engine.connect() as connection:
        row = (await connection.execute(text(build_stats_sql(patterns)))).one()._mapping
    return StatsSnapshot(
        total_jobs=row["total_jobs"],
        finished_attempts=row["finished_attempts"],
        successful_attempts=row["successful_attempts"],
        patterns=[
            PatternResult(pattern=p, match_count=row[f"{p.id}_matches"], success_count=row[f"{p.id}_successes"])
            for p in patterns
        ],
    )
