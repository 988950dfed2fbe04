"""/stats finds a planted factor, and cries no wolf when there is none: 2,000 synthetic attempts each."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.compute import compute_stats
from tests.support.stats_history import CRAFTED_NODE, EPOCH, use_utc

ATTEMPTS = 2000
PLANTED = "name_has_digits"
PLANTED_RATE, OTHERS_RATE = 0.2, 0.8
RATE_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class SyntheticAttempt:
    name: str
    arguments: list[str]
    attempt_number: int
    duration_ms: int
    minutes_after_epoch: int
    has_digit: bool


def synthetic_attempts(generator: random.Random) -> list[SyntheticAttempt]:
    """Every characteristic drawn independently of the others, so that only a planted outcome rule can matter."""
    attempts = []
    for _ in range(ATTEMPTS):
        length = generator.randint(4, 16)
        name = "".join(generator.choice(string.ascii_lowercase) for _ in range(length))
        has_digit = generator.random() < 0.5
        if has_digit:
            name = name[:-1] + "7"  # a digit without changing the length
        attempts.append(
            SyntheticAttempt(
                name=name,
                arguments=["a" * generator.choice([1, 5, 150]) for _ in range(generator.randint(0, 4))],
                attempt_number=generator.randint(1, 3),
                duration_ms=generator.choice([5, 50, 500, 1500, 15000]),
                minutes_after_epoch=generator.randrange(14 * 24 * 60),
                has_digit=has_digit,
            )
        )
    return attempts


async def insert_synthetic(
    engine: AsyncEngine, attempts: list[SyntheticAttempt], succeeded: Callable[[SyntheticAttempt], bool]
) -> None:
    """One job per attempt, written in two set-based statements."""
    async with engine.begin() as connection:
        job_ids = (
            await connection.execute(
                text("""
                    INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count, next_attempt_at)
                    SELECT name, '/bin/true', coalesce(string_to_array(arguments, ' '), '{}'), 'crashed', 3,
                           attempt_number, NULL
                    FROM unnest(CAST(:names AS text[]), CAST(:arguments AS text[]), CAST(:numbers AS int[]))
                         WITH ORDINALITY AS job (name, arguments, attempt_number, position)
                    ORDER BY position
                    RETURNING id
                """),
                {
                    "names": [a.name for a in attempts],
                    # Arguments here never contain a space: one string per job, split again in SQL.
                    "arguments": [" ".join(a.arguments) if a.arguments else None for a in attempts],
                    "numbers": [a.attempt_number for a in attempts],
                },
            )
        ).scalars()
        # Identity values follow the ORDER BY: sorted, the ids are in the order of `attempts`.
        ordered_ids = sorted(job_ids)
        await connection.execute(
            text("""
                INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, started_at, finished_at,
                                      duration_ms)
                SELECT job_id, attempt_number, :node, CASE WHEN ok THEN 'succeeded' ELSE 'failed' END,
                       CASE WHEN ok THEN 0 ELSE 1 END, started, started + make_interval(secs => duration / 1000.0),
                       duration
                FROM unnest(CAST(:job_ids AS bigint[]), CAST(:numbers AS int[]), CAST(:ok AS boolean[]),
                            CAST(:started AS timestamptz[]), CAST(:durations AS bigint[]))
                     AS attempt (job_id, attempt_number, ok, started, duration)
            """),
            {
                "node": CRAFTED_NODE,
                "job_ids": ordered_ids,
                "numbers": [a.attempt_number for a in attempts],
                "ok": [succeeded(a) for a in attempts],
                "started": [EPOCH + timedelta(minutes=a.minutes_after_epoch) for a in attempts],
                "durations": [a.duration_ms for a in attempts],
            },
        )


async def test_a_planted_factor_comes_first_and_significant(engine: AsyncEngine) -> None:
    await use_utc(engine)
    generator = random.Random(1)
    attempts = synthetic_attempts(generator)
    await insert_synthetic(
        engine,
        attempts,
        lambda a: generator.random() < (PLANTED_RATE if a.has_digit else OTHERS_RATE),
    )

    report = await compute_stats(engine)

    first = report.patterns[0]
    assert first.pattern.id == PLANTED, [(f.pattern.id, f.test) for f in report.patterns]
    assert first.significant
    assert first.success_rate == pytest.approx(PLANTED_RATE, abs=RATE_TOLERANCE)
    assert first.success_rate_others == pytest.approx(OTHERS_RATE, abs=RATE_TOLERANCE)
    assert first.match_count == sum(a.has_digit for a in attempts)
    assert first.interval is not None
    assert first.interval.low < first.success_rate < first.interval.high
    assert first.test is not None
    # Every other pattern has far weaker evidence. (One of them may still come out significant when, by chance, its
    # matches hold more names with digits: each pattern is tested on its own, and /stats says what goes with
    # failure, not what causes it.)
    assert all(f.test is not None and f.test.p_value > first.test.p_value for f in report.patterns[1:])


async def test_no_factor_no_significant_pattern(engine: AsyncEngine) -> None:
    await use_utc(engine)
    generator = random.Random(2)
    attempts = synthetic_attempts(generator)
    await insert_synthetic(engine, attempts, lambda _a: generator.random() < 0.6)

    report = await compute_stats(engine)

    tested = [f for f in report.patterns if f.test is not None]
    assert len(tested) == len(report.patterns)  # every pattern had matches and others to compare with
    assert not [(f.pattern.id, f.test, f.adjusted_p_value) for f in report.patterns if f.significant]
