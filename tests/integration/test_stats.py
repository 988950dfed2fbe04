"""The stats SQL against crafted jobs and attempts with hand-computed rates, and GET /stats over the same rows."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.status import AttemptOutcome, JobStatus
from service.settings import Settings
from service.stats.patterns import PATTERNS, Pattern
from service.stats.query import compute_stats, difference_from_average

S, F, K = AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.KILLED
SPAWN_FAILED, LOST, RUNNING = AttemptOutcome.SPAWN_FAILED, AttemptOutcome.LOST, AttemptOutcome.RUNNING
CRAFTED_NODE = "crafted-node"  # not the node of the app under test, so its reconciler leaves these rows alone
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CraftedAttempt:
    outcome: AttemptOutcome
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class CraftedJob:
    name: str
    arguments: list[str]
    status: JobStatus
    attempts: list[CraftedAttempt] = field(default_factory=list)
    """In order: the first is attempt number 1."""


async def insert_jobs(engine: AsyncEngine, jobs: list[CraftedJob]) -> None:
    """Write the rows as the service would have left them, but never due: no supervisor may pick them up."""
    async with engine.begin() as connection:
        for job in jobs:
            job_id = (
                await connection.execute(
                    text("""
                        INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count,
                                          next_attempt_at)
                        VALUES (:name, '/bin/true', :arguments, :status, :max_attempts, :attempts_count, NULL)
                        RETURNING id
                    """),
                    {
                        "name": job.name,
                        "arguments": job.arguments,
                        "status": job.status.value,
                        "max_attempts": max(2, len(job.attempts)),
                        "attempts_count": len(job.attempts),
                    },
                )
            ).scalar_one()
            for number, attempt in enumerate(job.attempts, start=1):
                finished = attempt.outcome is not RUNNING
                await connection.execute(
                    text("""
                        INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, signal,
                                              started_at, finished_at, duration_ms)
                        VALUES (:job_id, :number, :node_id, :outcome, :exit_code, :signal,
                                :started_at, :finished_at, :duration_ms)
                    """),
                    {
                        "job_id": job_id,
                        "number": number,
                        "node_id": CRAFTED_NODE,
                        "outcome": attempt.outcome.value,
                        "exit_code": {S: 0, F: 1}.get(attempt.outcome),
                        "signal": 9 if attempt.outcome is K else None,
                        "started_at": EPOCH,
                        "finished_at": EPOCH + timedelta(milliseconds=attempt.duration_ms or 0) if finished else None,
                        "duration_ms": attempt.duration_ms,
                    },
                )


# Every number below is worked out by hand in the comments; the attempts are a1..a10 (finished) plus one running.
HAND_CRAFTED_JOBS = [
    # 5 characters, no digit, no argument. a1: succeeded in exactly 1000 ms (not "> 1 second").
    CraftedJob("short", [], JobStatus.COMPLETED, [CraftedAttempt(S, 1000)]),
    # 16 characters, no digit, 2 arguments. a2: failed, 1500 ms; a3 (retry): succeeded, 1200 ms.
    CraftedJob("a-very-long-name", ["x", "y"], JobStatus.COMPLETED, [CraftedAttempt(F, 1500), CraftedAttempt(S, 1200)]),
    # 5 characters, digits, 1 argument. a4: failed, 300 ms; a5 (retry): killed, 2500 ms.
    CraftedJob("job42", ["x"], JobStatus.CRASHED, [CraftedAttempt(F, 300), CraftedAttempt(K, 2500)]),
    # 16 characters, a digit, 3 arguments. a6: could not start, 0 ms; a7 (retry): lost, no duration.
    CraftedJob(
        "long-name-with-7",
        ["a", "b", "c"],
        JobStatus.CRASHED,
        [CraftedAttempt(SPAWN_FAILED, 0), CraftedAttempt(LOST, None)],
    ),
    # Queued, never attempted: counts as a job, not in any rate.
    CraftedJob("waiting", [], JobStatus.QUEUED),
    # 12 characters, digits, 1 argument. a8: failed, 100 ms; its retry still runs and is in no rate.
    CraftedJob("in-flight-99", ["p"], JobStatus.RETRIED, [CraftedAttempt(F, 100), CraftedAttempt(RUNNING, None)]),
    # Exactly 10 characters (not "> 10"), no digit. a9: succeeded, 1001 ms (just over 1 second).
    CraftedJob("nightly-go", [], JobStatus.COMPLETED, [CraftedAttempt(S, 1001)]),
    # 8 characters but 11 bytes in UTF-8: length is counted in characters. 2 arguments. a10: succeeded, 50 ms.
    CraftedJob("café-été", ["one", "two"], JobStatus.COMPLETED, [CraftedAttempt(S, 50)]),
]
# 8 jobs; 10 finished attempts of which 4 succeeded (a1, a3, a9, a10): overall 4/10 = 0.4.
EXPECTED_TOTAL_JOBS = 8
EXPECTED_FINISHED = 10
EXPECTED_SUCCEEDED = 4
# pattern: (matches, successes, success rate, difference from 0.4)
EXPECTED_PATTERNS: dict[str, tuple[int, int, float, str]] = {
    # a-very-long-name, long-name-with-7, in-flight-99: a2 a3 a6 a7 a8; a3 succeeded. 0.2 vs 0.4.
    "Job name length > 10": (5, 1, 0.2, "-50%"),
    # job42, long-name-with-7, in-flight-99: a4 a5 a6 a7 a8; none succeeded.
    "Job name contains digits": (5, 0, 0.0, "-100%"),
    # a-very-long-name, long-name-with-7, café-été: a2 a3 a6 a7 a10; a3 and a10 succeeded. 0.4 vs 0.4.
    "Argument count >= 2": (5, 2, 0.4, "0%"),
    # a2 (1500), a3 (1200), a5 (2500), a9 (1001); a3 and a9 succeeded. 0.5 vs 0.4.
    "Job execution time > 1 second": (4, 2, 0.5, "+25%"),
    # a3, a5, a7 (the running retry is not finished); a3 succeeded. 0.3333 vs 0.4 is -16.7%.
    "Retry attempts": (3, 1, 1 / 3, "-17%"),
}


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


def test_the_issue_s_patterns_are_registered() -> None:
    assert [pattern.description for pattern in PATTERNS] == list(EXPECTED_PATTERNS)
    assert len({pattern.id for pattern in PATTERNS}) == len(PATTERNS)


async def test_empty_database_gives_zeros(engine: AsyncEngine) -> None:
    snapshot = await compute_stats(engine)

    assert (snapshot.total_jobs, snapshot.finished_attempts, snapshot.successful_attempts) == (0, 0, 0)
    assert snapshot.overall_success_rate == 0.0
    assert [(r.match_count, r.success_count, r.success_rate) for r in snapshot.patterns] == [(0, 0, 0.0)] * len(
        PATTERNS
    )


async def test_crafted_attempts_give_the_hand_computed_counts_and_rates(engine: AsyncEngine) -> None:
    await insert_jobs(engine, HAND_CRAFTED_JOBS)

    snapshot = await compute_stats(engine)

    assert snapshot.total_jobs == EXPECTED_TOTAL_JOBS
    assert snapshot.finished_attempts == EXPECTED_FINISHED
    assert snapshot.successful_attempts == EXPECTED_SUCCEEDED
    assert snapshot.overall_success_rate == pytest.approx(0.4)
    actual = {
        result.pattern.description: (
            result.match_count,
            result.success_count,
            round(result.success_rate, 9),  # 1/3 computed two ways may differ in the last bit
            difference_from_average(result.success_rate, snapshot.overall_success_rate),
        )
        for result in snapshot.patterns
    }
    assert actual == {
        description: (matches, successes, round(rate, 9), difference)
        for description, (matches, successes, rate, difference) in EXPECTED_PATTERNS.items()
    }


async def test_stats_are_one_sql_statement(engine: AsyncEngine) -> None:
    await insert_jobs(engine, HAND_CRAFTED_JOBS)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the dialect's first-connect queries are not ours to count
    statements: list[str] = []

    def _record(*arguments: Any) -> None:
        statements.append(arguments[2])  # (connection, cursor, statement, parameters, context, executemany)

    event.listen(engine.sync_engine, "before_cursor_execute", _record)
    try:
        await compute_stats(engine)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", _record)

    assert len(statements) == 1, statements
    [statement] = statements
    assert "attempt_facts" in statement
    assert statement.count("FILTER (WHERE") == 1 + 2 * len(PATTERNS)


async def test_a_new_pattern_is_one_registry_entry(engine: AsyncEngine) -> None:
    await insert_jobs(engine, HAND_CRAFTED_JOBS)
    extra = Pattern("ended_by_signal", "Ended by a signal", "signal IS NOT NULL")

    snapshot = await compute_stats(engine, [*PATTERNS, extra])

    [result] = [r for r in snapshot.patterns if r.pattern is extra]
    assert (result.match_count, result.success_count) == (1, 0)  # a5 only


def _python_reference(jobs: list[CraftedJob]) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """The same statistics computed by hand in Python: finished attempts, successes, and per pattern."""
    conditions: dict[str, Callable[[CraftedJob, int, CraftedAttempt], bool]] = {
        "Job name length > 10": lambda job, _n, _a: len(job.name) > 10,
        "Job name contains digits": lambda job, _n, _a: re.search("[0-9]", job.name) is not None,
        "Argument count >= 2": lambda job, _n, _a: len(job.arguments) >= 2,
        "Job execution time > 1 second": lambda _j, _n, a: a.duration_ms is not None and a.duration_ms > 1000,
        "Retry attempts": lambda _j, number, _a: number > 1,
    }
    finished = [
        (job, number, attempt)
        for job in jobs
        for number, attempt in enumerate(job.attempts, start=1)
        if attempt.outcome is not RUNNING
    ]
    per_pattern = {
        description: (
            sum(1 for row in finished if condition(*row)),
            sum(1 for row in finished if condition(*row) and row[2].outcome is S),
        )
        for description, condition in conditions.items()
    }
    return len(finished), sum(1 for _j, _n, a in finished if a.outcome is S), per_pattern


def _random_jobs(seed: int, count: int) -> list[CraftedJob]:
    generator = random.Random(seed)
    names = ["a", "backup", "task-123", "nightly-report", "x1", "ten-chars!", "crème-brûlée", "report-2024-final"]
    ending_outcomes = [S, S, S, F, F, K, SPAWN_FAILED, LOST]
    jobs = []
    for _ in range(count):
        attempts = [
            CraftedAttempt(generator.choice(ending_outcomes), generator.choice([None, 0, 999, 1000, 1001, 4000]))
            for _ in range(generator.randint(0, 3))
        ]
        if attempts and generator.random() < 0.2:
            attempts[-1] = CraftedAttempt(RUNNING, None)
        jobs.append(
            CraftedJob(
                generator.choice(names),
                [f"arg{i}" for i in range(generator.randint(0, 3))],
                JobStatus.COMPLETED,
                attempts,
            )
        )
    return jobs


async def test_many_random_attempts_agree_with_a_python_reference(engine: AsyncEngine) -> None:
    jobs = _random_jobs(seed=20261128, count=60)
    await insert_jobs(engine, jobs)
    finished, succeeded, per_pattern = _python_reference(jobs)
    assert finished > 0  # the seed gives something to compare

    snapshot = await compute_stats(engine)

    assert snapshot.total_jobs == len(jobs)
    assert (snapshot.finished_attempts, snapshot.successful_attempts) == (finished, succeeded)
    assert {r.pattern.description: (r.match_count, r.success_count) for r in snapshot.patterns} == per_pattern


async def test_get_stats_serves_the_same_numbers(engine: AsyncEngine, make_settings: Callable[..., Settings]) -> None:
    await insert_jobs(engine, HAND_CRAFTED_JOBS)

    async with AsyncTestClient(app=create_app(make_settings())) as client:
        response = await client.get("/stats")

    assert response.status_code == 200
    body = response.json()
    assert body["totalJobs"] == EXPECTED_TOTAL_JOBS
    assert body["totalAttempts"] == EXPECTED_FINISHED
    assert body["overallSuccessRate"] == 0.4
    assert body["patterns"] == [
        {
            "pattern": description,
            "matchCount": matches,
            "successRate": round(rate, 4),
            "differenceFromAverage": difference,
        }
        for description, (matches, _successes, rate, difference) in EXPECTED_PATTERNS.items()
    ]


async def test_get_stats_on_an_empty_database_gives_zeros(make_settings: Callable[..., Settings]) -> None:
    async with AsyncTestClient(app=create_app(make_settings())) as client:
        response = await client.get("/stats")

    assert response.status_code == 200
    assert response.json() == {
        "totalJobs": 0,
        "totalAttempts": 0,
        "overallSuccessRate": 0.0,
        "patterns": [
            {"pattern": description, "matchCount": 0, "successRate": 0.0, "differenceFromAverage": "0%"}
            for description in EXPECTED_PATTERNS
        ],
    }
