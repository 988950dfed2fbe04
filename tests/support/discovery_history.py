"""Synthetic histories for the /stats findings: one job per attempt, every characteristic chosen by the test, written
in two set-based statements."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.stats_history import CRAFTED_NODE, DEFAULT_PROGRAM

# Arguments travel as one string per job, split again in SQL on this character (never part of an argument here).
_SEPARATOR = "\x1f"


@dataclass(frozen=True, slots=True)
class Attempt:
    name: str
    started_at: datetime
    succeeded: bool
    arguments: list[str] = field(default_factory=list)
    node: str = CRAFTED_NODE
    program: str = DEFAULT_PROGRAM
    attempt_number: int = 1
    duration_ms: int = 500

    @property
    def family(self) -> str:
        """As attempt_facts.name_family: the name up to its first '-', '_' or digit."""
        match = re.match(r"[^-_0-9]*", self.name)
        return match.group(0) if match else ""


async def insert_attempts(engine: AsyncEngine, attempts: list[Attempt]) -> None:
    async with engine.begin() as connection:
        job_ids = (
            await connection.execute(
                text("""
                    INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count, next_attempt_at,
                                      created_at)
                    SELECT name, program, coalesce(string_to_array(arguments, :separator), '{}'), 'crashed', 20,
                           attempt_number, NULL, started - interval '1 minute'
                    FROM unnest(CAST(:names AS text[]), CAST(:programs AS text[]), CAST(:arguments AS text[]),
                                CAST(:numbers AS int[]), CAST(:started AS timestamptz[]))
                         WITH ORDINALITY AS job (name, program, arguments, attempt_number, started, position)
                    ORDER BY position
                    RETURNING id
                """),
                {
                    "separator": _SEPARATOR,
                    "names": [a.name for a in attempts],
                    "programs": [a.program for a in attempts],
                    "arguments": [_SEPARATOR.join(a.arguments) if a.arguments else None for a in attempts],
                    "numbers": [a.attempt_number for a in attempts],
                    "started": [a.started_at for a in attempts],
                },
            )
        ).scalars()
        # Identity values follow the ORDER BY: sorted, the ids are in the order of `attempts`.
        await connection.execute(
            text("""
                INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, started_at, finished_at,
                                      duration_ms)
                SELECT job_id, attempt_number, node, CASE WHEN ok THEN 'succeeded' ELSE 'failed' END,
                       CASE WHEN ok THEN 0 ELSE 1 END, started, started + make_interval(secs => duration / 1000.0),
                       duration
                FROM unnest(CAST(:job_ids AS bigint[]), CAST(:numbers AS int[]), CAST(:nodes AS text[]),
                            CAST(:ok AS boolean[]), CAST(:started AS timestamptz[]), CAST(:durations AS bigint[]))
                     AS attempt (job_id, attempt_number, node, ok, started, duration)
            """),
            {
                "job_ids": sorted(job_ids),
                "numbers": [a.attempt_number for a in attempts],
                "nodes": [a.node for a in attempts],
                "ok": [a.succeeded for a in attempts],
                "started": [a.started_at for a in attempts],
                "durations": [a.duration_ms for a in attempts],
            },
        )


def spread(start: datetime, end: datetime, fraction: float) -> datetime:
    """The instant `fraction` of the way from start to end."""
    return start + timedelta(seconds=(end - start).total_seconds() * fraction)
