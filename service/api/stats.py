"""GET /stats: which job characteristics go with failure."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.schemas import PatternRead, StatsRead
from service.stats.query import compute_stats, difference_from_average

RATE_DECIMALS = 4


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]  # noqa: RUF012

    @get(summary="Success rates overall and per job pattern")
    async def get_stats(self, engine: NamedDependency[AsyncEngine]) -> StatsRead:
        """Rates are over finished attempts; an attempt succeeds when its program exits 0."""
        snapshot = await compute_stats(engine)
        overall = snapshot.overall_success_rate
        return StatsRead(
            total_jobs=snapshot.total_jobs,
            total_attempts=snapshot.finished_attempts,
            overall_success_rate=round(overall, RATE_DECIMALS),
            patterns=[
                PatternRead(
                    pattern=result.pattern.description,
                    match_count=result.match_count,
                    success_rate=round(result.success_rate, RATE_DECIMALS),
                    difference_from_average=(
                        difference_from_average(result.success_rate, overall) if result.match_count else "0%"
                    ),
                )
                for result in snapshot.patterns
            ],
        )
