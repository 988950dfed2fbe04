"""From count rows to findings: job rates, what-if, flaky names, pattern order and notes, worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from service.stats.patterns import Pattern
from service.stats.query import CountRow
from service.stats.report import FLAKY_MIN_ATTEMPTS, build_report, difference_from_average

PROGRAM = "/bin/true"
STRONG = Pattern("strong", "Strong", "true")
WEAK = Pattern("weak", "Weak", "true")
NOTHING = Pattern("nothing", "Nothing", "false")
EVERYTHING = Pattern("everything", "Everything", "true")


def row(dimension: str, key: Any, total: int, successes: int = 0, program: str = PROGRAM) -> CountRow:
    return CountRow(program=program, dimension=dimension, key=key, total=total, successes=successes)


@pytest.mark.parametrize(
    ("rate", "average", "expected"),
    [
        (0.83, 0.72, "+15%"),
        (0.36, 0.72, "-50%"),
        (0.72, 0.72, "0%"),
        (0.7201, 0.72, "0%"),  # rounds to zero: no "+0%" or "-0%"
        (0.7199, 0.72, "0%"),
        (0.0, 0.5, "-100%"),
        (1.0, 0.25, "+300%"),
        (0.5, 0.0, "0%"),  # no average to compare with
    ],
)
def test_difference_from_average_is_a_signed_whole_percent(rate: float, average: float, expected: str) -> None:
    assert difference_from_average(rate, average) == expected


def test_what_if_multiplies_the_failure_rates_of_each_attempt_number() -> None:
    # Attempt 1: 60 of 100 succeed (0.6); attempt 2: 10 of 40 (0.25). No attempt 3 in the history.
    rows = [
        row("all", None, 140, 70),
        row("attempt_number", 1, 100, 60),
        row("attempt_number", 2, 40, 10),
    ]

    report = build_report(rows, [], computed_from="rollup")

    # 1 attempt: 0.6. 2: 1 - 0.4 * 0.75 = 0.7. 3: 1 - 0.4 * 0.75 * 0.75 = 0.775 (attempt 2's rate stands in for 3).
    # 4: 1 - 0.4 * 0.75^3 = 0.83125. 5: 1 - 0.4 * 0.75^4 = 0.8734375.
    assert [(w.max_attempts, w.extrapolated) for w in report.what_if] == [
        (1, False),
        (2, False),
        (3, True),
        (4, True),
        (5, True),
    ]
    assert [w.job_success_rate for w in report.what_if] == [
        pytest.approx(value) for value in (0.6, 0.7, 0.775, 0.83125, 0.8734375)
    ]


def test_what_if_without_history_says_none() -> None:
    report = build_report([], [], computed_from="rollup")
    assert {w.job_success_rate for w in report.what_if} == {None}


def test_job_figures_come_from_the_jobs_by_status() -> None:
    rows = [
        row("jobs", {"status": "completed", "retried": False}, 50),
        row("jobs", {"status": "completed", "retried": True}, 12),
        row("jobs", {"status": "crashed", "retried": False}, 3),
        row("jobs", {"status": "crashed", "retried": True}, 8),
        row("jobs", {"status": "queued", "retried": False}, 5),
        row("jobs", {"status": "cancelled", "retried": True}, 2),
        row("jobs", {"status": "completed", "retried": True}, 4, program="/bin/other"),
    ]

    report = build_report(rows, [], computed_from="rollup")

    assert report.total_jobs == 84
    # Decided: 66 completed + 11 crashed = 77 (queued and cancelled are neither): 66 / 77.
    assert (report.completed_jobs, report.crashed_jobs, report.decided_jobs) == (66, 11, 77)
    assert report.job_success_rate == pytest.approx(66 / 77)
    # Retried and decided: 16 rescued + 8 crashed anyway = 24: 16 / 24.
    assert (report.rescued_jobs, report.retried_failures) == (16, 24)
    assert report.retry_rescue_rate == pytest.approx(16 / 24)


def test_flaky_names_have_both_outcomes_and_enough_runs_worst_first() -> None:
    enough = FLAKY_MIN_ATTEMPTS
    rows = [
        row("name_family", "always", enough * 3, enough * 3),  # never fails: not flaky
        row("name_family", "never", enough * 2, 0),  # never succeeds: broken, not flaky
        row("name_family", "rare", enough - 1, 5),  # too few runs
        row("name_family", "coin", enough * 2, enough),  # 0.5
        row("name_family", "shaky", enough, enough // 4),  # 0.25: worst
        row("name_family", "mostly", enough * 4, enough * 3, program="/bin/a"),
        row("name_family", "mostly", enough * 4, enough * 3, program="/bin/b"),  # 0.75 over both programs
    ]

    report = build_report(rows, [], computed_from="rollup")

    assert [(g.value, g.attempts, g.success_rate) for g in report.flaky_names] == [
        ("shaky", enough, 0.25),
        ("coin", enough * 2, 0.5),
        ("mostly", enough * 8, 0.75),
    ]


def test_patterns_strongest_evidence_first_and_notes_instead_of_division_by_zero() -> None:
    # 1000 attempts, 500 successes. strong: 100 of 400 (0.25) against 400 of 600 (0.667); weak: 240 of 500 (0.48)
    # against 260 of 500 (0.52).
    rows = [
        row("all", None, 1000, 500),
        row("pattern", "weak", 500, 240),
        row("pattern", "strong", 400, 100),
        row("pattern", "nothing", 0, 0),
        row("pattern", "everything", 1000, 500),
    ]

    report = build_report(rows, [NOTHING, WEAK, EVERYTHING, STRONG], computed_from="rollup")

    assert [f.pattern.id for f in report.patterns] == ["strong", "weak", "nothing", "everything"]
    strong, weak, nothing, everything = report.patterns
    assert strong.significant
    assert not weak.significant  # z = -1.265, p = 0.206
    assert weak.test is not None
    assert weak.test.p_value == pytest.approx(0.20590, abs=1e-4)
    assert strong.success_rate == 0.25
    assert strong.success_rate_others == pytest.approx(400 / 600)
    assert strong.difference_from_average == "-50%"
    assert (nothing.success_rate, nothing.success_rate_others, nothing.interval, nothing.test) == (
        0.0,
        0.5,
        None,
        None,
    )
    assert nothing.note is not None
    assert "no finished attempt matches" in nothing.note
    assert not nothing.significant
    assert (everything.success_rate_others, everything.test) == (None, None)
    assert everything.note is not None
    assert "nothing to compare" in everything.note
