"""From aggregated counts to the findings of /stats: rates, intervals, tests, breakdowns, what-if and flaky names.

Pure Python over a few hundred count rows (whatever the size of the history); the counting itself is SQL's job.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.stats.findings import Discovery
from service.stats.patterns import Pattern
from service.stats.query import ALL, JOBS, PATTERN, CountRow
from service.stats.statistics import Interval, ProportionTest, benjamini_hochberg, compare_proportions, wilson_interval

FALSE_DISCOVERY_RATE = 0.05
"""`significant` means: still below this after the Benjamini-Hochberg correction over every pattern tested."""
WHAT_IF_MAX_ATTEMPTS = (1, 2, 3, 4, 5)
FLAKY_MIN_ATTEMPTS = 20
"""A name family needs this many finished attempts before it can be called flaky."""
FLAKY_NAMES_LIMIT = 20
BREAKDOWN_LIMIT = 50
"""Longest list per breakdown (the most frequent values first), so that a million distinct names stay a short answer."""
COMPLETED, CRASHED = "completed", "crashed"
DURATION_BUCKETS = ("up to 100 ms", "up to 1 s", "up to 10 s", "up to 1 min", "up to 10 min", "over 10 min", "unknown")
"""The bands of attempt_facts.duration_bucket, shortest first."""


def rate(successes: int, total: int) -> float | None:
    return successes / total if total else None


def difference_from_average(rate: float, average: float) -> str:
    """The relative difference as a signed whole percent: 0.83 against 0.72 is "+15%"."""
    if average == 0:
        return "0%"
    percent = round((rate - average) / average * 100)
    return f"{percent:+d}%" if percent else "0%"


@dataclass(frozen=True, slots=True)
class PatternFinding:
    pattern: Pattern
    match_count: int
    success_count: int
    others_count: int
    others_success_count: int
    overall_success_rate: float
    test: ProportionTest | None
    adjusted_p_value: float | None
    significant: bool

    @property
    def success_rate(self) -> float:
        """0.0 when nothing matches (the contract's zero; `note` says why)."""
        return rate(self.success_count, self.match_count) or 0.0

    @property
    def success_rate_others(self) -> float | None:
        return rate(self.others_success_count, self.others_count)

    @property
    def interval(self) -> Interval | None:
        return wilson_interval(self.success_count, self.match_count)

    @property
    def difference_from_average(self) -> str:
        if not self.match_count:
            return "0%"
        return difference_from_average(self.success_rate, self.overall_success_rate)

    @property
    def note(self) -> str | None:
        if not self.match_count:
            return "no finished attempt matches this pattern: there is no rate to compare"
        if not self.others_count:
            return "every finished attempt matches this pattern: there is nothing to compare it with"
        return None


@dataclass(frozen=True, slots=True)
class Group:
    """Finished attempts that share one value of a breakdown."""

    value: Any
    attempts: int
    successes: int

    @property
    def success_rate(self) -> float:
        return rate(self.successes, self.attempts) or 0.0


@dataclass(frozen=True, slots=True)
class OutcomeGroup:
    outcome: str
    exit_code: int | None
    signal: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class WhatIf:
    max_attempts: int
    job_success_rate: float | None
    """1 - the product over n = 1..max_attempts of (1 - success rate of attempt number n); None without history."""
    extrapolated: bool
    """Some attempt number up to max_attempts has no history: the rate of the nearest lower number stood in for it."""


@dataclass(frozen=True, slots=True)
class StatsReport:
    total_jobs: int
    finished_attempts: int
    successful_attempts: int
    completed_jobs: int
    crashed_jobs: int
    """Jobs whose last allowed attempt failed."""
    rescued_jobs: int
    """Completed jobs that needed a retry: their first attempt failed and a later one succeeded."""
    crashed_after_retries: int
    """Crashed jobs that had been retried."""
    patterns: list[PatternFinding]
    outcomes: list[OutcomeGroup]
    name_families: list[Group]
    programs: list[Group]
    nodes: list[Group]
    hours_of_day: list[Group]
    duration_buckets: list[Group]
    attempt_numbers: list[Group]
    what_if: list[WhatIf]
    flaky_names: list[Group]
    computed_from: str = field(default="scan")
    discovery: Discovery | None = None
    """The findings over values and recent windows, and the summary (service/stats/compute.py adds them)."""

    @property
    def overall_success_rate(self) -> float:
        """Per finished attempt."""
        return rate(self.successful_attempts, self.finished_attempts) or 0.0

    @property
    def decided_jobs(self) -> int:
        """Jobs with a final verdict on their program: completed or crashed (cancelled jobs are neither)."""
        return self.completed_jobs + self.crashed_jobs

    @property
    def job_success_rate(self) -> float:
        """Per decided job, after its retries."""
        return rate(self.completed_jobs, self.decided_jobs) or 0.0

    @property
    def retried_failures(self) -> int:
        """Decided jobs whose first attempt failed and that were retried."""
        return self.rescued_jobs + self.crashed_after_retries

    @property
    def retry_rescue_rate(self) -> float:
        return rate(self.rescued_jobs, self.retried_failures) or 0.0


class _Totals:
    """Count rows summed over programs: (dimension, key) -> [total, successes]."""

    def __init__(self, rows: Iterable[CountRow]) -> None:
        self.cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.keys: dict[str, Any] = {}
        self.per_program: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in rows:
            encoded = json.dumps(row.key, sort_keys=True)
            self.keys[encoded] = row.key
            cell = self.cells[(row.dimension, encoded)]
            cell[0] += row.total
            cell[1] += row.successes
            if row.dimension == ALL:
                program = self.per_program[row.program]
                program[0] += row.total
                program[1] += row.successes

    def get(self, dimension: str, key: object = None) -> tuple[int, int]:
        total, successes = self.cells.get((dimension, json.dumps(key, sort_keys=True)), (0, 0))
        return total, successes

    def groups(self, dimension: str) -> list[Group]:
        return [
            Group(self.keys[encoded], total, successes)
            for (name, encoded), (total, successes) in self.cells.items()
            if name == dimension and total
        ]


def _most_frequent(groups: Iterable[Group]) -> list[Group]:
    return sorted(groups, key=lambda g: (-g.attempts, str(g.value)))[:BREAKDOWN_LIMIT]


def _findings(totals: _Totals, patterns: Sequence[Pattern]) -> list[PatternFinding]:
    finished, successes = totals.get(ALL)
    overall = rate(successes, finished) or 0.0
    counts = [totals.get(PATTERN, pattern.id) for pattern in patterns]
    tests = [
        compare_proportions(matched_successes, matched, successes - matched_successes, finished - matched)
        for matched, matched_successes in counts
    ]
    adjusted = benjamini_hochberg([test.p_value if test else None for test in tests])
    findings = [
        PatternFinding(
            pattern=pattern,
            match_count=matched,
            success_count=matched_successes,
            others_count=finished - matched,
            others_success_count=successes - matched_successes,
            overall_success_rate=overall,
            test=test,
            adjusted_p_value=q,
            significant=q is not None and q <= FALSE_DISCOVERY_RATE,
        )
        for pattern, (matched, matched_successes), test, q in zip(patterns, counts, tests, adjusted, strict=True)
    ]
    order = {finding.pattern.id: index for index, finding in enumerate(findings)}

    def strength(finding: PatternFinding) -> tuple[int, float, float, float, int]:
        """Strongest evidence first: smallest p-value, then largest |z|, then largest gap; untested last."""
        if finding.test is None:
            return (1, 1.0, 0.0, 0.0, order[finding.pattern.id])
        gap = abs(finding.success_rate - (finding.success_rate_others or 0.0))
        # p-values equal to 9 significant digits are ties: the same table summed in another order may differ in the
        # last bit, and the order must not depend on that.
        p_value = float(f"{finding.test.p_value:.9g}")
        return (0, p_value, -round(abs(finding.test.z or 0.0), 9), -round(gap, 9), order[finding.pattern.id])

    return sorted(findings, key=strength)


def _what_if(attempt_numbers: list[Group]) -> list[WhatIf]:
    rates = {group.value: group.success_rate for group in attempt_numbers if group.attempts}
    answers = []
    for max_attempts in WHAT_IF_MAX_ATTEMPTS:
        if not rates:
            answers.append(WhatIf(max_attempts, None, extrapolated=False))
            continue
        all_fail = 1.0
        for number in range(1, max_attempts + 1):
            lower = [n for n in rates if n <= number]
            stand_in = max(lower) if lower else min(rates)
            all_fail *= 1 - rates[stand_in]
        answers.append(
            WhatIf(max_attempts, 1 - all_fail, extrapolated=any(n not in rates for n in range(1, max_attempts + 1)))
        )
    return answers


def build_report(rows: Iterable[CountRow], patterns: Sequence[Pattern], *, computed_from: str) -> StatsReport:
    totals = _Totals(rows)
    finished, successes = totals.get(ALL)
    jobs: dict[tuple[str, bool], int] = defaultdict(int)
    for group in totals.groups(JOBS):
        jobs[(group.value["status"], group.value["retried"])] += group.attempts
    attempt_numbers = sorted(totals.groups("attempt_number"), key=lambda g: g.value)
    families = totals.groups("name_family")
    flaky = [g for g in families if 0 < g.successes < g.attempts and g.attempts >= FLAKY_MIN_ATTEMPTS]
    bucket_order = {bucket: index for index, bucket in enumerate(DURATION_BUCKETS)}
    return StatsReport(
        total_jobs=sum(jobs.values()),
        finished_attempts=finished,
        successful_attempts=successes,
        completed_jobs=jobs[(COMPLETED, False)] + jobs[(COMPLETED, True)],
        crashed_jobs=jobs[(CRASHED, False)] + jobs[(CRASHED, True)],
        rescued_jobs=jobs[(COMPLETED, True)],
        crashed_after_retries=jobs[(CRASHED, True)],
        patterns=_findings(totals, patterns),
        outcomes=sorted(
            (
                OutcomeGroup(g.value["outcome"], g.value["exitCode"], g.value["signal"], g.attempts)
                for g in totals.groups("outcome")
            ),
            key=lambda o: (-o.attempts, o.outcome, o.exit_code or 0, o.signal or 0),
        )[:BREAKDOWN_LIMIT],
        name_families=_most_frequent(families),
        programs=_most_frequent(Group(name, total, ok) for name, (total, ok) in totals.per_program.items() if total),
        nodes=_most_frequent(totals.groups("node")),
        hours_of_day=sorted(totals.groups("hour"), key=lambda g: g.value),
        duration_buckets=sorted(totals.groups("duration_bucket"), key=lambda g: bucket_order.get(g.value, 99)),
        attempt_numbers=attempt_numbers[:BREAKDOWN_LIMIT],
        what_if=_what_if(attempt_numbers),
        flaky_names=sorted(flaky, key=lambda g: (g.success_rate, -g.attempts, str(g.value)))[:FLAKY_NAMES_LIMIT],
        computed_from=computed_from,
    )
