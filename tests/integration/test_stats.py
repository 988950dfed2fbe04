"""/stats over crafted histories: every figure checked against values worked out by hand, through SQL and HTTP."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.status import JobStatus
from service.settings import Settings
from service.stats.compute import compute_stats
from service.stats.filters import StatsFilters
from service.stats.patterns import PATTERNS, Pattern
from service.stats.report import StatsReport
from service.stats.statistics import ComparisonMethod
from tests.support.stats_history import (
    EPOCH,
    LOST,
    RUNNING,
    SPAWN_FAILED,
    CraftedAttempt,
    CraftedJob,
    F,
    K,
    S,
    insert_jobs,
    use_utc,
)

THURSDAY, SATURDAY, SUNDAY = EPOCH, EPOCH + timedelta(days=2), EPOCH + timedelta(days=3)
ENV = "/usr/bin/env"
LONG_ARGUMENT = "p" * 101


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


# Thirteen finished attempts a1..a13 and one still running; every figure below is worked out from this table.
#  a   job               chars args longest  n  outcome        ms    start      program
#  a1  short                 5    0     0    1  succeeded     1000  Thu 09:00
#  a2  a-very-long-name     16    2     1    1  failed (1)    1500  Thu 10:00
#  a3  a-very-long-name     16    2     1    2  succeeded     1200  Thu 10:01
#  a4  job42                 5    1     1    1  failed (1)     300  Sat 20:00
#  a5  job42                 5    1     1    2  killed (9)    2500  Sat 20:05
#  a6  long-name-with-7     16    3     1    1  spawn_failed     0  Thu 07:00
#  a7  long-name-with-7     16    3     1    2  lost          NULL  Thu 07:01
#  a8  in-flight-99         12    1     1    1  failed (1)     100  Thu 12:00   (its retry is still running)
#  a9  nightly-go           10    0     0    1  succeeded     1001  Sun 03:00
#  a10 café-été              8    2     3    1  succeeded       50  Thu 17:59
#  a11 report_x              8    1   101    1  failed (2)      20  Thu 18:00   /usr/bin/env
#  a12 report_x              8    1   101    2  failed (1)      50  Thu 18:01   /usr/bin/env
#  a13 report_x              8    1   101    3  succeeded     5000  Thu 18:02   /usr/bin/env
# Successes: a1 a3 a9 a10 a13, 5 of 13. The job "waiting" has no attempt.
HAND_CRAFTED_JOBS = [
    CraftedJob("short", [], JobStatus.COMPLETED, [CraftedAttempt(S, 1000, at(THURSDAY, 9))]),
    CraftedJob(
        "a-very-long-name",
        ["x", "y"],
        JobStatus.COMPLETED,
        [CraftedAttempt(F, 1500, at(THURSDAY, 10)), CraftedAttempt(S, 1200, at(THURSDAY, 10, 1))],
    ),
    CraftedJob(
        "job42",
        ["x"],
        JobStatus.CRASHED,
        [CraftedAttempt(F, 300, at(SATURDAY, 20)), CraftedAttempt(K, 2500, at(SATURDAY, 20, 5))],
    ),
    CraftedJob(
        "long-name-with-7",
        ["a", "b", "c"],
        JobStatus.CRASHED,
        [CraftedAttempt(SPAWN_FAILED, 0, at(THURSDAY, 7)), CraftedAttempt(LOST, None, at(THURSDAY, 7, 1))],
    ),
    CraftedJob("waiting", [], JobStatus.QUEUED),
    CraftedJob(
        "in-flight-99",
        ["p"],
        JobStatus.RETRIED,
        [CraftedAttempt(F, 100, at(THURSDAY, 12)), CraftedAttempt(RUNNING, None, at(THURSDAY, 12, 1))],
    ),
    CraftedJob("nightly-go", [], JobStatus.COMPLETED, [CraftedAttempt(S, 1001, at(SUNDAY, 3))]),
    CraftedJob("café-été", ["one", "two"], JobStatus.COMPLETED, [CraftedAttempt(S, 50, at(THURSDAY, 17, 59))]),
    CraftedJob(
        "report_x",
        [LONG_ARGUMENT],
        JobStatus.COMPLETED,
        [
            CraftedAttempt(F, 20, at(THURSDAY, 18), exit_code=2),
            CraftedAttempt(F, 50, at(THURSDAY, 18, 1)),
            CraftedAttempt(S, 5000, at(THURSDAY, 18, 2)),
        ],
        program=ENV,
        max_attempts=3,
    ),
]
TOTAL_JOBS, FINISHED, SUCCEEDED = 9, 13, 5
OVERALL = 5 / 13  # 0.384615...

# Every pattern's table has the same margins (5 successes among 13 attempts), so Fisher's probability of "x of the
# m matching attempts succeeded" is C(m, x) C(13 - m, 5 - x) / C(13, 5), with C(13, 5) = 1287. The weights for
# x = 0, 1, ... are: m = 2: 462 660 165; m = 3: 252 630 360 45; m = 5: 56 350 560 280 40 1;
# m = 8: 1 40 280 560 350 56. The two-sided p-value sums the weights no larger than the observed one.
# The Wilson bounds follow (s/m + z²/2m ± z sqrt(s/m (1 - s/m) / m + z²/4m²)) / (1 + z²/m), z = 1.96.
# Benjamini-Hochberg over 11 p-values: p * 11 / rank, then the running minimum from the largest rank down.
# id: (pattern, matches, successes, others' rate, difference, (low, high), p-value, adjusted p-value)
EXPECTED_PATTERNS: dict[str, tuple[str, int, int, float, str, tuple[float, float], float, float]] = {
    # a4 a5 a6 a7 a8, none succeeded; x = 0 weighs 56: 56 + 40 + 1 = 97. Rank 1: 97 * 11 / 1287 = 0.829, but
    # rank 2 gives less, 165 * 11 / 2 / 1287 = 0.705, and the adjusted values never decrease with rank.
    "name_has_digits": (
        "Job name contains digits",
        5,
        0,
        5 / 8,
        "-100%",
        (0.0, 0.4345),
        97 / 1287,
        11 / 2 * 165 / 1287,
    ),
    # a1 a9, both succeeded: 1.0 vs 3/11; x = 2 weighs 165 (the least likely): 165. Rank 2: 165 * 11 / 2 / 1287.
    "no_arguments": ("No arguments", 2, 2, 3 / 11, "+160%", (0.3424, 1.0), 165 / 1287, 11 / 2 * 165 / 1287),
    # a2 a3 a5 a9 a13; a3 a9 a13 succeeded: 0.6 vs 2/8; 280 + 56 + 40 + 1 = 377. Ranks 3-4: 377 * 11 / 4 / 1287.
    "long_running": (
        "Job execution time > 1 second",
        5,
        3,
        2 / 8,
        "+56%",
        (0.2307, 0.8824),
        377 / 1287,
        11 / 4 * 377 / 1287,
    ),
    # a4 a5 a6 a7 a9 a11 a12 a13; a9 a13 succeeded: 0.25 vs 3/5; 280 + 56 + 40 + 1 = 377.
    "outside_office_hours": (
        "Started outside 08:00-18:00 (server time)",
        8,
        2,
        3 / 5,
        "-35%",
        (0.0715, 0.5907),
        377 / 1287,
        11 / 4 * 377 / 1287,
    ),
    # a6 a7, none succeeded: 0 vs 5/11; 462 + 165 = 627. Rank 5, but ranks 6-7 give 727 * 11 / 7 / 1287, smaller.
    "three_or_more_arguments": (
        "Argument count >= 3",
        2,
        0,
        5 / 11,
        "-100%",
        (0.0, 0.6576),
        627 / 1287,
        11 / 7 * 727 / 1287,
    ),
    # a2 a3 a6 a7 a8; a3 succeeded: 0.2 vs 4/8, (0.2 - 0.3846) / 0.3846 = -48%; 350 + 280 + 56 + 40 + 1 = 727.
    "long_name": ("Job name length > 10", 5, 1, 4 / 8, "-48%", (0.0362, 0.6245), 727 / 1287, 11 / 7 * 727 / 1287),
    # a6 a8 a10 a11 a12 (100 ms counts; a7 has no duration); a10 succeeded: as long_name.
    "ended_quickly": ("Ended within 100 ms", 5, 1, 4 / 8, "-48%", (0.0362, 0.6245), 727 / 1287, 11 / 7 * 727 / 1287),
    # a11 a12 a13; a13 succeeded: 1/3 vs 4/10; x = 1 is the likeliest table: p = 1.
    "long_argument": ("Any argument longer than 100 characters", 3, 1, 4 / 10, "-13%", (0.0615, 0.7923), 1.0, 1.0),
    # a4 a5 (Saturday) a9 (Sunday); a9 succeeded: as long_argument.
    "weekend": ("Started on a Saturday or Sunday (server time)", 3, 1, 4 / 10, "-13%", (0.0615, 0.7923), 1.0, 1.0),
    # a2 a3 a6 a7 a10; a3 a10 succeeded: 0.4 vs 3/8 (+4%); x = 2 is the likeliest: p = 1.
    "two_or_more_arguments": ("Argument count >= 2", 5, 2, 3 / 8, "+4%", (0.1176, 0.7693), 1.0, 1.0),
    # a3 a5 a7 a12 a13; a3 a13 succeeded: as two_or_more_arguments.
    "retry_attempt": ("Retry attempts", 5, 2, 3 / 8, "+4%", (0.1176, 0.7693), 1.0, 1.0),
}
# The order above is the expected order: p-value first; equal p-values by |z| (long_argument and weekend have 0.208,
# two_or_more_arguments and retry_attempt 0.090), then by the registry's order.

# (outcome, exit code, signal, attempts)
EXPECTED_OUTCOMES = [
    ("succeeded", 0, None, 5),
    ("failed", 1, None, 4),  # a2 a4 a8 a12
    ("failed", 2, None, 1),  # a11
    ("killed", None, 9, 1),  # a5
    ("lost", None, None, 1),  # a7
    ("spawn_failed", None, None, 1),  # a6
]
# (value, attempts, successes); most attempts first, then by value.
EXPECTED_FAMILIES = [
    ("report", 3, 1),
    ("a", 2, 1),
    ("job", 2, 0),
    ("long", 2, 0),
    ("café", 1, 1),
    ("in", 1, 0),
    ("nightly", 1, 1),
    ("short", 1, 1),
]
EXPECTED_PROGRAMS = [("/bin/true", 10, 4), (ENV, 3, 1)]
EXPECTED_HOURS = [(3, 1, 1), (7, 2, 0), (9, 1, 1), (10, 2, 1), (12, 1, 0), (17, 1, 1), (18, 3, 1), (20, 2, 0)]
EXPECTED_BUCKETS = [("up to 100 ms", 5, 1), ("up to 1 s", 2, 1), ("up to 10 s", 5, 3), ("unknown", 1, 0)]
# Attempt 1: a1 a2 a4 a6 a8 a9 a10 a11 (a1 a9 a10 succeeded); 2: a3 a5 a7 a12 (a3); 3: a13.
EXPECTED_ATTEMPT_NUMBERS = [(1, 8, 3), (2, 4, 1), (3, 1, 1)]
# 1 - (1 - 3/8) = 0.375; 1 - 5/8 * 3/4 = 0.53125; then attempt 3 always succeeded: 1.0, and 1.0 beyond it.
EXPECTED_WHAT_IF = [(1, 0.375, False), (2, 0.53125, False), (3, 1.0, False), (4, 1.0, True), (5, 1.0, True)]
# Completed: short, a-very-long-name, nightly-go, café-été, report_x; crashed: job42, long-name-with-7.
# Retried among them: a-very-long-name and report_x (rescued), job42 and long-name-with-7 (crashed anyway).
COMPLETED, CRASHED, RESCUED, RETRIED_FAILURES = 5, 2, 2, 4


@pytest.fixture
async def crafted(engine: AsyncEngine) -> AsyncEngine:
    await use_utc(engine)
    await insert_jobs(engine, HAND_CRAFTED_JOBS)
    return engine


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def _record(*arguments: Any) -> None:
        statements.append(arguments[2])  # (connection, cursor, statement, parameters, context, executemany)

    event.listen(engine.sync_engine, "before_cursor_execute", _record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", _record)


def test_the_contract_s_patterns_are_registered() -> None:
    descriptions = {pattern.description for pattern in PATTERNS}
    assert len(PATTERNS) >= 10
    assert {
        "Job name length > 10",
        "Job execution time > 1 second",
        "Job name contains digits",
        "Argument count >= 2",
        "Argument count >= 3",
        "Retry attempts",
        "Any argument longer than 100 characters",
        "Started outside 08:00-18:00 (server time)",
    } <= descriptions
    assert len({pattern.id for pattern in PATTERNS}) == len(PATTERNS)
    assert set(EXPECTED_PATTERNS) == {pattern.id for pattern in PATTERNS}


async def test_empty_database_gives_zeros(engine: AsyncEngine) -> None:
    report = await compute_stats(engine)

    assert (report.total_jobs, report.finished_attempts, report.successful_attempts) == (0, 0, 0)
    assert (report.overall_success_rate, report.job_success_rate, report.retry_rescue_rate) == (0.0, 0.0, 0.0)
    assert [(f.match_count, f.success_count, f.success_rate, f.test) for f in report.patterns] == [
        (0, 0, 0.0, None)
    ] * len(PATTERNS)
    assert report.outcomes == []
    assert report.name_families == report.hours_of_day == report.flaky_names == []
    assert {w.job_success_rate for w in report.what_if} == {None}


def _check_report(report: StatsReport) -> None:
    assert (report.total_jobs, report.finished_attempts, report.successful_attempts) == (
        TOTAL_JOBS,
        FINISHED,
        SUCCEEDED,
    )
    assert report.overall_success_rate == pytest.approx(OVERALL)
    assert (report.completed_jobs, report.crashed_jobs, report.rescued_jobs, report.retried_failures) == (
        COMPLETED,
        CRASHED,
        RESCUED,
        RETRIED_FAILURES,
    )
    assert report.job_success_rate == pytest.approx(5 / 7)
    assert report.retry_rescue_rate == pytest.approx(0.5)
    assert [f.pattern.id for f in report.patterns] == list(EXPECTED_PATTERNS)
    for finding in report.patterns:
        _description, matches, successes, others, difference, (low, high), p_value, adjusted = EXPECTED_PATTERNS[
            finding.pattern.id
        ]
        assert (finding.match_count, finding.success_count) == (matches, successes), finding.pattern.id
        assert finding.success_rate == pytest.approx(successes / matches)
        assert finding.success_rate_others == pytest.approx(others)
        assert finding.difference_from_average == difference, finding.pattern.id
        assert finding.interval is not None
        assert (round(finding.interval.low, 4), round(finding.interval.high, 4)) == (low, high), finding.pattern.id
        assert finding.test is not None
        assert finding.test.method is ComparisonMethod.FISHER  # every table here has an expected count below 5
        assert finding.test.p_value == pytest.approx(p_value, rel=1e-9), finding.pattern.id
        assert finding.adjusted_p_value == pytest.approx(adjusted, rel=1e-9), finding.pattern.id
        assert not finding.significant
        assert finding.note is None
    assert [(o.outcome, o.exit_code, o.signal, o.attempts) for o in report.outcomes] == EXPECTED_OUTCOMES
    assert [(g.value, g.attempts, g.successes) for g in report.name_families] == EXPECTED_FAMILIES
    assert [(g.value, g.attempts, g.successes) for g in report.programs] == EXPECTED_PROGRAMS
    assert [(g.value, g.attempts, g.successes) for g in report.nodes] == [("crafted-node", 13, 5)]
    assert [(g.value, g.attempts, g.successes) for g in report.hours_of_day] == EXPECTED_HOURS
    assert [(g.value, g.attempts, g.successes) for g in report.duration_buckets] == EXPECTED_BUCKETS
    assert [(g.value, g.attempts, g.successes) for g in report.attempt_numbers] == EXPECTED_ATTEMPT_NUMBERS
    assert [(w.max_attempts, w.extrapolated) for w in report.what_if] == [(m, e) for m, _rate, e in EXPECTED_WHAT_IF]
    assert [w.job_success_rate for w in report.what_if] == [pytest.approx(rate) for _m, rate, _e in EXPECTED_WHAT_IF]
    assert report.flaky_names == []  # no family has 20 attempts


async def test_crafted_history_gives_the_hand_computed_figures(crafted: AsyncEngine) -> None:
    report = await compute_stats(crafted)

    assert report.computed_from == "rollup"
    _check_report(report)


async def test_a_scan_gives_the_same_figures_as_the_rollup(crafted: AsyncEngine) -> None:
    # A window that holds the whole history is answered by a scan of attempt_facts.
    report = await compute_stats(crafted, StatsFilters(since=EPOCH - timedelta(days=1)))

    assert report.computed_from == "scan"
    _check_report(report)


def _expected_body() -> dict[str, Any]:
    def group(value: Any, attempts: int, successes: int) -> dict[str, Any]:
        return {
            "value": value,
            "attempts": attempts,
            "successes": successes,
            "successRate": round(successes / attempts, 4),
        }

    return {
        "totalJobs": TOTAL_JOBS,
        "totalAttempts": FINISHED,
        "overallSuccessRate": 0.3846,
        "jobSuccessRate": 0.7143,
        "decidedJobs": COMPLETED + CRASHED,
        "retryRescueRate": 0.5,
        "rescuedJobs": RESCUED,
        "retriedFailures": RETRIED_FAILURES,
        "patterns": [
            {
                "pattern": description,
                "matchCount": matches,
                "successRate": round(successes / matches, 4),
                "differenceFromAverage": difference,
                "id": pattern_id,
                "successCount": successes,
                "successRateOthers": round(others, 4),
                "confidenceInterval": {"low": low, "high": high},
                "pValue": pytest.approx(p_value, rel=1e-9),
                "test": "Fisher's exact test",
                "adjustedPValue": pytest.approx(adjusted, rel=1e-9),
                "significant": False,
                "note": None,
            }
            for pattern_id, (
                description,
                matches,
                successes,
                others,
                difference,
                (low, high),
                p_value,
                adjusted,
            ) in EXPECTED_PATTERNS.items()
        ],
        "breakdowns": {
            "outcomes": [
                {
                    "outcome": outcome,
                    "exitCode": exit_code,
                    "signal": signal,
                    "attempts": attempts,
                    "share": round(attempts / FINISHED, 4),
                }
                for outcome, exit_code, signal, attempts in EXPECTED_OUTCOMES
            ],
            "nameFamilies": [group(*g) for g in EXPECTED_FAMILIES],
            "programs": [group(*g) for g in EXPECTED_PROGRAMS],
            "nodes": [group("crafted-node", 13, 5)],
            "hoursOfDay": [group(*g) for g in EXPECTED_HOURS],
            "durationBuckets": [group(*g) for g in EXPECTED_BUCKETS],
            "attemptNumbers": [group(*g) for g in EXPECTED_ATTEMPT_NUMBERS],
        },
        "whatIf": [
            {"maxAttempts": m, "jobSuccessRate": round(rate, 4), "extrapolated": extrapolated}
            for m, rate, extrapolated in EXPECTED_WHAT_IF
        ],
        "flakyNames": [],
        "filters": {"since": None, "until": None, "program": None, "namePrefix": None},
        "computedFrom": "rollup",
    }


async def test_get_stats_serves_every_hand_computed_figure(
    crafted: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        response = await client.get("/stats")

    assert response.status_code == 200
    body = response.json()
    findings_fields = (
        "findings",
        "summary",
        "hypothesesTested",
        "recentSince",
        "overlapAttempts",
        "overlapSampled",
        "overlapBasedOnAttempts",
        "valueAttempts",
        "valueSampled",
    )
    # The contract's fields, then the findings after them (tested in test_stats_discovery.py).
    assert list(body)[-len(findings_fields) :] == list(findings_fields)
    assert {key: value for key, value in body.items() if key not in findings_fields} == _expected_body()


async def test_get_stats_on_an_empty_database_gives_zeros(make_settings: Callable[..., Settings]) -> None:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        response = await client.get("/stats")

    assert response.status_code == 200
    body = response.json()
    assert (body["totalJobs"], body["totalAttempts"], body["overallSuccessRate"]) == (0, 0, 0.0)
    assert (body["jobSuccessRate"], body["retryRescueRate"], body["decidedJobs"]) == (0.0, 0.0, 0)
    assert [
        (p["pattern"], p["matchCount"], p["successRate"], p["differenceFromAverage"], p["pValue"], p["significant"])
        for p in body["patterns"]
    ] == [(pattern.description, 0, 0.0, "0%", None, False) for pattern in PATTERNS]
    assert all(p["note"] and p["confidenceInterval"] is None for p in body["patterns"])
    assert body["breakdowns"] == {
        "outcomes": [],
        "nameFamilies": [],
        "programs": [],
        "nodes": [],
        "hoursOfDay": [],
        "durationBuckets": [],
        "attemptNumbers": [],
    }
    assert body["whatIf"] == [{"maxAttempts": m, "jobSuccessRate": None, "extrapolated": False} for m in range(1, 6)]
    assert body["flakyNames"] == []


# query: (totalJobs, totalAttempts, successes, computedFrom)
FILTER_CASES: list[tuple[dict[str, str], tuple[int, int, int, str]]] = [
    ({"program": ENV}, (1, 3, 1, "rollup")),  # report_x
    ({"program": "/bin/nothing"}, (0, 0, 0, "rollup")),
    ({"namePrefix": "long"}, (1, 2, 0, "scan")),  # long-name-with-7, not a-very-long-name
    ({"namePrefix": "in-"}, (1, 1, 0, "scan")),  # in-flight-99: a8 (its retry still runs)
    ({"namePrefix": "in_"}, (0, 0, 0, "scan")),  # "_" is not a wildcard here
    ({"namePrefix": "café"}, (1, 1, 1, "scan")),
    # Saturday: a4 a5 started then; job42 was created then.
    ({"since": "2026-01-03", "until": "2026-01-04T00:00:00Z"}, (1, 2, 0, "scan")),
    ({"since": "2026-01-04T00:00:00+00:00"}, (1, 1, 1, "scan")),  # Sunday: a9, nightly-go
    # a1 a6 a7 started before 10:00; short, a-very-long-name, long-name-with-7 and waiting were created before it.
    ({"until": "2026-01-01T10:00:00Z"}, (4, 3, 1, "scan")),
    # a11 a12 a13; report_x was created at 17:59, before the window.
    ({"since": "2026-01-01T18:00:00Z", "program": ENV, "namePrefix": "rep"}, (0, 3, 1, "scan")),
]
BAD_FILTERS: list[tuple[dict[str, str], str]] = [
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-02-30"}, "until"),
    ({"since": "1h", "until": "2h"}, "since"),
    ({"namePrefix": "x" * 201}, "namePrefix"),
    ({"program": ""}, "program"),
]


async def test_filters_select_the_hand_picked_rows(
    crafted: AsyncEngine, make_settings: Callable[..., Settings]
) -> None:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        for query, expected in FILTER_CASES:
            response = await client.get("/stats", params=query)

            assert response.status_code == 200, (query, response.text)
            body = response.json()
            successes = sum(o["attempts"] for o in body["breakdowns"]["outcomes"] if o["outcome"] == "succeeded")
            assert (body["totalJobs"], body["totalAttempts"], successes, body["computedFrom"]) == expected, query
            assert body["filters"]["program"] == query.get("program")
            assert body["filters"]["namePrefix"] == query.get("namePrefix")


async def test_bad_filters_are_problem_details_naming_the_parameter(make_settings: Callable[..., Settings]) -> None:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        for query, parameter in BAD_FILTERS:
            response = await client.get("/stats", params=query)

            assert response.status_code == 400, query
            assert response.headers["content-type"].startswith("application/problem+json")
            body = response.json()
            assert body["detail"].startswith(f"{parameter}: "), body
            assert [(e["field"], e["source"]) for e in body["errors"]] == [(parameter, "query")]


def _pattern_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if all(f"({p.condition})" in s for p in PATTERNS)]


async def test_patterns_are_evaluated_in_one_statement(crafted: AsyncEngine) -> None:
    async with crafted.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the dialect's first-connect queries are not ours to count

    with recorded_statements(crafted) as rebuild:
        await compute_stats(crafted)  # the first request builds the rollup from a full scan
    [statement] = _pattern_statements(rebuild)
    assert "FROM attempt_facts" in statement
    assert statement.count("FILTER (WHERE matches_") == 2 * len(PATTERNS)
    assert not any("condition" in s or "name_length > 10" in s for s in rebuild if s != statement)

    await insert_jobs(crafted, [CraftedJob("later", [], JobStatus.COMPLETED, [CraftedAttempt(S, 5)])])
    with recorded_statements(crafted) as fold:
        await compute_stats(crafted)  # then folds what finished since, again in one statement
    assert len(_pattern_statements(fold)) == 1

    with recorded_statements(crafted) as scan:
        await compute_stats(crafted, StatsFilters(name_prefix="a"))  # a filtered request is one statement in all
    assert len([s for s in scan if not s.startswith("SET LOCAL ")]) == 1  # besides its settings
    assert len(_pattern_statements(scan)) == 1


async def test_a_new_pattern_is_one_registry_entry(crafted: AsyncEngine) -> None:
    extra = Pattern("ended_by_signal", "Ended by a signal", "signal IS NOT NULL")

    report = await compute_stats(crafted, patterns=[*PATTERNS, extra])

    [finding] = [f for f in report.patterns if f.pattern is extra]
    assert (finding.match_count, finding.success_count) == (1, 0)  # a5 only
    assert len(report.patterns) == len(PATTERNS) + 1


# The patterns again, in Python, for the comparison with the SQL on random histories.
PYTHON_CONDITIONS: dict[str, Callable[[CraftedJob, int, CraftedAttempt], bool]] = {
    "long_name": lambda job, _n, _a: len(job.name) > 10,
    "name_has_digits": lambda job, _n, _a: re.search("[0-9]", job.name) is not None,
    "two_or_more_arguments": lambda job, _n, _a: len(job.arguments) >= 2,
    "long_running": lambda _j, _n, a: a.duration_ms is not None and a.duration_ms > 1000,
    "retry_attempt": lambda _j, number, _a: number > 1,
    "three_or_more_arguments": lambda job, _n, _a: len(job.arguments) >= 3,
    "long_argument": lambda job, _n, _a: any(len(argument) > 100 for argument in job.arguments),
    "outside_office_hours": lambda _j, _n, a: not 8 <= a.started_at.hour < 18,
    "weekend": lambda _j, _n, a: a.started_at.isoweekday() >= 6,
    "no_arguments": lambda job, _n, _a: not job.arguments,
    "ended_quickly": lambda _j, _n, a: a.duration_ms is not None and a.duration_ms <= 100,
}


def _random_jobs(seed: int, count: int) -> list[CraftedJob]:
    generator = random.Random(seed)
    names = ["a", "backup", "task-123", "nightly-report", "x1", "ten-chars!", "crème-brûlée", "report-2024-final"]
    arguments = ["x", "in", "out", "q" * 100, "r" * 101]
    ending_outcomes = [S, S, S, F, F, K, SPAWN_FAILED, LOST]
    jobs = []
    for _ in range(count):
        attempts = [
            CraftedAttempt(
                generator.choice(ending_outcomes),
                generator.choice([None, 0, 99, 100, 101, 999, 1000, 1001, 4000]),
                EPOCH + timedelta(minutes=generator.randrange(7 * 24 * 60)),
            )
            for _ in range(generator.randint(0, 3))
        ]
        if attempts and generator.random() < 0.2:
            attempts[-1] = CraftedAttempt(RUNNING, None, attempts[-1].started_at)
        jobs.append(
            CraftedJob(
                generator.choice(names),
                [generator.choice(arguments) for _ in range(generator.randint(0, 4))],
                JobStatus.COMPLETED,
                attempts,
                program=generator.choice(["/bin/true", ENV]),
            )
        )
    return jobs


async def test_many_random_attempts_agree_with_a_python_reference(engine: AsyncEngine) -> None:
    await use_utc(engine)
    jobs = _random_jobs(seed=20261128, count=80)
    await insert_jobs(engine, jobs)
    finished = [
        (job, number, attempt)
        for job in jobs
        for number, attempt in enumerate(job.attempts, start=1)
        if attempt.outcome is not RUNNING
    ]
    assert len(finished) > 50  # the seed gives something to compare

    report = await compute_stats(engine)

    assert report.total_jobs == len(jobs)
    assert (report.finished_attempts, report.successful_attempts) == (
        len(finished),
        sum(1 for _j, _n, a in finished if a.outcome is S),
    )
    assert {f.pattern.id: (f.match_count, f.success_count) for f in report.patterns} == {
        pattern_id: (
            sum(1 for row in finished if condition(*row)),
            sum(1 for row in finished if condition(*row) and row[2].outcome is S),
        )
        for pattern_id, condition in PYTHON_CONDITIONS.items()
    }
    assert {g.value: (g.attempts, g.successes) for g in report.hours_of_day} == {
        hour: (
            sum(1 for _j, _n, a in finished if a.started_at.hour == hour),
            sum(1 for _j, _n, a in finished if a.started_at.hour == hour and a.outcome is S),
        )
        for hour in {a.started_at.hour for _j, _n, a in finished}
    }
