"""The hypotheses of /stats's findings: every frequent value of every dimension, and each program's and name family's
recent window, tested against the rest, with the registered patterns, under one Benjamini-Hochberg correction.

Pure Python over the count rows SQL produced (service/stats/discovery_sql.py); the overlaps of the strongest findings
are resolved in service/stats/overlap.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from service.stats.discovery_sql import FAMILY_KIND, PROGRAM_KIND, RECENT_PREFIX, VALUE_PREFIX
from service.stats.findings import FALSE_DISCOVERY_RATE, Finding, FindingKind
from service.stats.query import CountRow
from service.stats.report import Group, PatternFinding, StatsReport
from service.stats.statistics import benjamini_hochberg, compare_proportions

MIN_SUPPORT_ATTEMPTS = 20
"""A value is tested only when at least this many finished attempts have it, and as many do not."""
MIN_SUPPORT_SHARE = 0.01
"""... and when it covers at least this share of the finished attempts."""
TOP_CHANGES = 20
"""Per kind (program, name family), only this many of the most active in the recent window are compared."""
DEFAULT_RECENT = timedelta(hours=24)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def describe_duration(duration: timedelta) -> str:
    """24 h, 30 min, 7 d, 90 s: the largest unit that divides it (days from two on: "the last 24 h", not "1 d")."""
    seconds = int(duration.total_seconds())
    for unit, size, smallest in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("min", 60, 60)):
        if seconds >= smallest and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _weekday(value: object) -> str:
    known = isinstance(value, int) and 1 <= value <= len(_WEEKDAYS)
    return f"Started on a {_WEEKDAYS[value - 1] if known and isinstance(value, int) else value} (server time)"


def _hour(value: object) -> str:
    return f"Started at {value:02d}:00-{value:02d}:59 (server time)" if isinstance(value, int) else f"Hour {value}"


_DESCRIBE: dict[str, Callable[[object], str]] = {
    "name_family": lambda value: f"Name family is '{value}'",
    "program": lambda value: f"Program is {value}",
    "node": lambda value: f"Ran on node '{value}'",
    "hour": _hour,
    "weekday": _weekday,
    "duration_bucket": lambda value: "Duration unknown" if value == "unknown" else f"Ran {value}",
    "attempt_number": lambda value: f"Attempt number {value}",
}


def describe_value(dimension: str, value: object) -> str:
    """The sentence shown as `pattern` for one value of a dimension."""
    if dimension.startswith("argument_"):
        position = dimension.removeprefix("argument_")
        return f"No argument {position}" if value is None else f"Argument {position} is '{value}'"
    describe = _DESCRIBE.get(dimension)
    return describe(value) if describe else f"{dimension} is {value!r}"


def describe_change(kind: str, value: str, recent: timedelta) -> str:
    subject = f"Program {value}" if kind == PROGRAM_KIND else f"Name family '{value}'"
    return f"{subject} in the last {describe_duration(recent)}"


def _pattern_finding(finding: PatternFinding) -> Finding:
    return Finding(
        id=finding.pattern.id,
        kind=FindingKind.PATTERN,
        description=finding.pattern.description,
        match_count=finding.match_count,
        success_count=finding.success_count,
        others_count=finding.others_count,
        others_success_count=finding.others_success_count,
        overall_success_rate=finding.overall_success_rate,
        test=finding.test,
        condition=finding.pattern.condition,
    )


def value_findings(
    report: StatsReport, rows: Iterable[CountRow], sample: tuple[int, int] | None = None
) -> list[Finding]:
    """Each frequent enough value against every other value of its dimension; `sample` is (attempts, successes)
    the value counts are over when they are not over every finished attempt of the report."""
    finished, successes = sample or (report.finished_attempts, report.successful_attempts)
    minimum = max(MIN_SUPPORT_ATTEMPTS, MIN_SUPPORT_SHARE * finished)
    findings = []
    for row in rows:
        dimension = row.dimension.removeprefix(VALUE_PREFIX)
        others, others_successes = finished - row.total, successes - row.successes
        if row.total < minimum or others < MIN_SUPPORT_ATTEMPTS:
            continue
        findings.append(
            Finding(
                id=f"{dimension}:{json.dumps(row.key)}",
                kind=FindingKind.VALUE,
                description=describe_value(dimension, row.key),
                match_count=row.total,
                success_count=row.successes,
                others_count=others,
                others_success_count=others_successes,
                overall_success_rate=report.overall_success_rate,
                test=compare_proportions(row.successes, row.total, others_successes, others),
                dimension=dimension,
                value=row.key,
                condition_value=json.dumps(row.key),
            )
        )
    return findings


def change_findings(report: StatsReport, rows: Iterable[CountRow], recent: timedelta) -> list[Finding]:
    """Each program and name family in the recent window against itself before it."""
    totals: dict[str, dict[str, Group]] = {
        PROGRAM_KIND: {str(g.value): g for g in report.programs},
        FAMILY_KIND: {str(g.value): g for g in report.name_families},
    }
    by_kind: dict[str, list[CountRow]] = {PROGRAM_KIND: [], FAMILY_KIND: []}
    for row in rows:
        by_kind.setdefault(row.dimension.removeprefix(RECENT_PREFIX), []).append(row)
    findings = []
    for kind, kind_rows in by_kind.items():
        kind_rows.sort(key=lambda r: (-r.total, str(r.key)))
        for row in kind_rows[:TOP_CHANGES]:
            whole = totals.get(kind, {}).get(str(row.key))
            if whole is None:
                continue
            before, before_successes = whole.attempts - row.total, whole.successes - row.successes
            if row.total < MIN_SUPPORT_ATTEMPTS or before < MIN_SUPPORT_ATTEMPTS:
                continue
            findings.append(
                Finding(
                    id=f"recent:{kind}:{row.key}",
                    kind=FindingKind.CHANGE,
                    description=describe_change(kind, str(row.key), recent),
                    match_count=row.total,
                    success_count=row.successes,
                    others_count=before,
                    others_success_count=before_successes,
                    overall_success_rate=report.overall_success_rate,
                    test=compare_proportions(row.successes, row.total, before_successes, before),
                    dimension=kind,
                    value=row.key,
                )
            )
    return findings


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Significant first, then rejected but explained, then the rest; within each, by how much the rate surely
    differs (the end of the difference's interval nearest zero), then by p-value; ties (two findings that select the
    same attempts) by id, so that every way of counting ranks them alike."""

    def key(finding: Finding) -> tuple[int, float, float, str]:
        tier = 0 if finding.significant else 1 if finding.rejected else 2
        p_value = finding.test.p_value if finding.test else 2.0
        return (tier, -round(finding.strength, 9), float(f"{p_value:.9g}"), finding.id)

    return sorted(findings, key=key)


def test_all(
    report: StatsReport,
    value_rows: Sequence[CountRow],
    recent_rows: Sequence[CountRow],
    recent: timedelta,
    value_sample: tuple[int, int] | None,
) -> tuple[list[Finding], list[PatternFinding]]:
    """Every hypothesis, corrected together: the findings ranked, and the report's patterns with the family's
    adjusted p-values (their order and every other figure unchanged)."""
    patterns = [_pattern_finding(p) for p in report.patterns]
    values = value_findings(report, value_rows, value_sample)
    hypotheses = [*patterns, *values, *change_findings(report, recent_rows, recent)]
    adjusted = benjamini_hochberg([h.test.p_value if h.test else None for h in hypotheses])
    corrected = [dataclasses.replace(h, adjusted_p_value=q) for h, q in zip(hypotheses, adjusted, strict=True)]
    pattern_q = dict(zip((p.id for p in patterns), adjusted[: len(patterns)], strict=True))
    report_patterns = [
        dataclasses.replace(
            p,
            adjusted_p_value=pattern_q[p.pattern.id],
            significant=(q := pattern_q[p.pattern.id]) is not None and q <= FALSE_DISCOVERY_RATE,
        )
        for p in report.patterns
    ]
    return rank(h for h in corrected if h.test is not None), report_patterns
