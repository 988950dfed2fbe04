"""GET /stats: which job characteristics go with failure, breakdowns, what-if and flaky names, over a window."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.errors import ProblemError
from service.api.schemas import (
    BreakdownsRead,
    FindingRead,
    GroupRead,
    IntervalRead,
    OutcomeRead,
    PatternRead,
    StatsFiltersRead,
    StatsRead,
    WhatIfRead,
)
from service.stats.compute import compute_stats
from service.stats.discovery import DEFAULT_RECENT
from service.stats.filters import FilterError, StatsFilters, parse_filters, parse_recent
from service.stats.findings import Finding
from service.stats.report import Group, PatternFinding, StatsReport, difference_from_average

RATE_DECIMALS = 4


def _rate(value: float) -> float:
    return round(value, RATE_DECIMALS)


def _optional_rate(value: float | None) -> float | None:
    return None if value is None else _rate(value)


def _pattern(finding: PatternFinding) -> PatternRead:
    interval = finding.interval
    return PatternRead(
        pattern=finding.pattern.description,
        match_count=finding.match_count,
        success_rate=_rate(finding.success_rate),
        difference_from_average=finding.difference_from_average,
        id=finding.pattern.id,
        success_count=finding.success_count,
        success_rate_others=_optional_rate(finding.success_rate_others),
        confidence_interval=IntervalRead(low=_rate(interval.low), high=_rate(interval.high)) if interval else None,
        p_value=finding.test.p_value if finding.test else None,
        test=finding.test.method.value if finding.test else None,
        adjusted_p_value=finding.adjusted_p_value,
        significant=finding.significant,
        note=finding.note,
    )


def _interval(low: float, high: float) -> IntervalRead:
    return IntervalRead(low=_rate(low), high=_rate(high))


def _finding(finding: Finding) -> FindingRead:
    interval, difference = finding.interval, finding.difference_interval
    return FindingRead(
        pattern=finding.description,
        match_count=finding.match_count,
        success_rate=_rate(finding.success_rate),
        difference_from_average=difference_from_average(finding.success_rate, finding.overall_success_rate),
        id=finding.id,
        success_count=finding.success_count,
        success_rate_others=_optional_rate(finding.success_rate_others),
        confidence_interval=_interval(interval.low, interval.high) if interval else None,
        p_value=finding.test.p_value if finding.test else None,
        test=finding.test.method.value if finding.test else None,
        adjusted_p_value=finding.adjusted_p_value,
        significant=finding.significant,
        kind=finding.kind.value,
        dimension=finding.dimension,
        value=finding.value,
        others_count=finding.others_count,
        difference_points=round(finding.difference * 100, 2),
        difference_interval=IntervalRead(low=round(difference.low * 100, 2), high=round(difference.high * 100, 2))
        if difference
        else None,
        same_attempts=list(finding.same_attempts),
        explained_by=finding.explained_by,
        stratified_p_value=finding.stratified_p_value,
    )


def _groups(groups: list[Group]) -> list[GroupRead]:
    return [
        GroupRead(value=g.value, attempts=g.attempts, successes=g.successes, success_rate=_rate(g.success_rate))
        for g in groups
    ]


def stats_read(report: StatsReport, filters: StatsFilters) -> StatsRead:
    finished = report.finished_attempts
    discovery = report.discovery
    return StatsRead(
        total_jobs=report.total_jobs,
        total_attempts=finished,
        overall_success_rate=_rate(report.overall_success_rate),
        job_success_rate=_rate(report.job_success_rate),
        decided_jobs=report.decided_jobs,
        retry_rescue_rate=_rate(report.retry_rescue_rate),
        rescued_jobs=report.rescued_jobs,
        retried_failures=report.retried_failures,
        patterns=[_pattern(finding) for finding in report.patterns],
        breakdowns=BreakdownsRead(
            outcomes=[
                OutcomeRead(
                    outcome=o.outcome,
                    exit_code=o.exit_code,
                    signal=o.signal,
                    attempts=o.attempts,
                    share=_rate(o.attempts / finished),
                )
                for o in report.outcomes
            ],
            name_families=_groups(report.name_families),
            programs=_groups(report.programs),
            nodes=_groups(report.nodes),
            hours_of_day=_groups(report.hours_of_day),
            duration_buckets=_groups(report.duration_buckets),
            attempt_numbers=_groups(report.attempt_numbers),
        ),
        what_if=[
            WhatIfRead(
                max_attempts=w.max_attempts,
                job_success_rate=_optional_rate(w.job_success_rate),
                extrapolated=w.extrapolated,
            )
            for w in report.what_if
        ],
        flaky_names=_groups(report.flaky_names),
        filters=StatsFiltersRead(
            since=filters.since, until=filters.until, program=filters.program, name_prefix=filters.name_prefix
        ),
        computed_from=report.computed_from,
        findings=[_finding(f) for f in discovery.findings] if discovery else [],
        summary=discovery.summary if discovery else [],
        hypotheses_tested=discovery.hypotheses_tested if discovery else 0,
        recent_since=discovery.recent_since if discovery else None,
        overlap_attempts=discovery.overlap_attempts if discovery else 0,
        overlap_sampled=discovery.overlap_sampled if discovery else False,
        overlap_based_on_attempts=discovery.overlap_based_on_attempts if discovery else 0,
        value_attempts=discovery.value_attempts if discovery else 0,
        value_sampled=discovery.value_sampled if discovery else False,
    )


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]  # noqa: RUF012

    @get(summary="Success rates overall, per job pattern (with the evidence), per breakdown, and what retries buy")
    async def get_stats(
        self,
        *,
        stats_engine: NamedDependency[AsyncEngine],
        since: Annotated[
            str | None, QueryParameter(description="Attempts started at or after: ISO 8601, or a time ago (24h, 7d)")
        ] = None,
        until: Annotated[
            str | None, QueryParameter(description="Attempts started before: ISO 8601, or a time ago (1h)")
        ] = None,
        program: Annotated[
            str | None, QueryParameter(description="Only jobs that run this program (exact path)")
        ] = None,
        name_prefix: Annotated[
            str | None, QueryParameter(name="namePrefix", description="Only jobs whose name starts with this")
        ] = None,
        recent: Annotated[
            str | None,
            QueryParameter(description="The window the change findings compare with the time before (24h, 7d)"),
        ] = None,
    ) -> StatsRead:
        """Per-attempt rates are over finished attempts; an attempt succeeds when its program exits 0."""
        try:
            filters = parse_filters(since=since, until=until, program=program, name_prefix=name_prefix)
            recent_window = DEFAULT_RECENT if recent is None else parse_recent(recent)
        except FilterError as error:
            raise ProblemError(
                status_code=400,
                detail=str(error),
                field_errors=[{"field": error.parameter, "message": error.message, "source": "query"}],
            ) from None
        return stats_read(await compute_stats(stats_engine, filters, recent=recent_window), filters)
