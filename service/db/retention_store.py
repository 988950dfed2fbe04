"""The queries of retention: which finished attempts of a node still have output files, marking them removed, and
deleting finished jobs (with their attempts) past their time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.db.connections import Database
from service.domain.status import FINAL_JOB_STATUSES


@dataclass(frozen=True, slots=True)
class AttemptWithFiles:
    attempt_id: int
    job_id: int
    attempt_number: int


class RetentionStore:
    """Each method is one statement, committed before it returns."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def attempts_with_output(self, *, node_id: str, ended_before: datetime, limit: int) -> list[AttemptWithFiles]:
        """Attempts of `node_id` that ended before then and whose files were not removed yet, oldest first."""
        async with self._database.driver() as driver:
            rows = await driver.fetch(
                """
                SELECT id AS attempt_id, job_id, attempt_number FROM attempts
                WHERE node_id = $1 AND output_removed_at IS NULL AND finished_at IS NOT NULL AND finished_at < $2
                ORDER BY finished_at, id
                LIMIT $3
                """,
                node_id,
                ended_before,
                limit,
            )
        return [AttemptWithFiles(**dict(row)) for row in rows]

    async def mark_output_removed(self, attempt_ids: Sequence[int]) -> int:
        """Remember that these attempts' files are gone (a column no statistic reads: the rollup stays as it is)."""
        async with self._database.driver() as driver:
            status = await driver.execute(
                "UPDATE attempts SET output_removed_at = now() WHERE id = ANY($1::bigint[])", list(attempt_ids)
            )
        return int(status.split()[-1])

    async def delete_finished_jobs(self, *, finished_before: datetime, limit: int) -> int:
        """Delete up to `limit` jobs final since before then, with their attempts; returns how many.

        Only jobs whose attempts' files are all gone: a node removes its own files, and must have done so first.
        A job being reopened or cancelled (its row locked) is skipped, never waited for.
        """
        async with self._database.driver() as driver:
            status = await driver.execute(
                """
                WITH doomed AS (
                    SELECT j.id FROM jobs j
                    WHERE j.finished_at < $1 AND j.status = ANY($2::text[])
                      AND NOT EXISTS (
                          SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.output_removed_at IS NULL
                      )
                    ORDER BY j.finished_at
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED
                )
                DELETE FROM jobs j USING doomed WHERE j.id = doomed.id
                """,
                finished_before,
                [status.value for status in FINAL_JOB_STATUSES],
                limit,
            )
        return int(status.split()[-1])
