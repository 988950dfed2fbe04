"""The schema a psql user reads: the views' columns are stable, and every table, view and column says what it is."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Columns are only ever appended to a view: a psql user's saved queries keep working.
ATTEMPT_FACTS_COLUMNS = [
    "attempt_id",
    "job_id",
    "job_name",
    "program",
    "node_id",
    "attempt_number",
    "outcome",
    "succeeded",
    "exit_code",
    "signal",
    "started_at",
    "finished_at",
    "duration_ms",
    "name_length",
    "name_has_digits",
    "argument_count",
    "name_family",
    "max_argument_length",
    "is_retry",
    "hour_of_day",
    "day_of_week",
    "duration_bucket",
    "arguments",
]
JOB_OVERVIEW_COLUMNS = [
    "job_id",
    "api_job_id",
    "job_name",
    "name_family",
    "program",
    "arguments",
    "argument_count",
    "status",
    "succeeded",
    "is_final",
    "max_attempts",
    "attempts_count",
    "retries",
    "rescued_by_retry",
    "created_at",
    "started_at",
    "finished_at",
    "exit_code",
    "turnaround",
    "latest_attempt_number",
    "latest_outcome",
    "latest_exit_code",
    "latest_signal",
    "latest_node_id",
    "latest_started_at",
    "latest_finished_at",
    "latest_duration_ms",
    "latest_error",
]
ALEMBIC_TABLE = "alembic_version"  # Alembic's own bookkeeping


async def columns_of(engine: AsyncEngine, relation: str) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("""
                SELECT attname FROM pg_attribute
                WHERE attrelid = CAST(:relation AS regclass) AND attnum > 0 AND NOT attisdropped
                ORDER BY attnum
            """),
            {"relation": relation},
        )
        return list(result.scalars())


async def test_the_views_have_their_documented_columns(engine: AsyncEngine) -> None:
    assert await columns_of(engine, "attempt_facts") == ATTEMPT_FACTS_COLUMNS
    assert await columns_of(engine, "job_overview") == JOB_OVERVIEW_COLUMNS


async def test_every_table_view_and_column_has_a_comment(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        uncommented = (
            await connection.execute(
                text("""
                    SELECT c.relname || coalesce('.' || a.attname, '') AS name
                    FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    WHERE c.relkind IN ('r', 'v', 'm') AND c.relname <> :alembic
                      AND (obj_description(c.oid, 'pg_class') IS NULL
                           OR (a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL))
                    ORDER BY 1
                """),
                {"alembic": ALEMBIC_TABLE},
            )
        ).scalars()
        uncommented_names = list(uncommented)
    assert not uncommented_names, f"without a COMMENT: {uncommented_names}"


async def test_job_overview_shows_each_job_with_its_latest_attempt(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        job_ids = (
            await connection.execute(
                text("""
                    INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count, next_attempt_at)
                    VALUES ('task-7', '/bin/true', '{a}', 'completed', 2, 2, NULL),
                           ('waiting', '/bin/true', '{}', 'queued', 2, 0, NULL)
                    RETURNING id
                """)
            )
        ).scalars()
        retried, waiting = list(job_ids)
        await connection.execute(
            text("""
                INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, started_at, finished_at,
                                      duration_ms)
                VALUES (:job, 1, 'n1', 'failed', 1, now(), now(), 10), (:job, 2, 'n2', 'succeeded', 0, now(), now(), 20)
            """),
            {"job": retried},
        )
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("""
                    SELECT api_job_id, name_family, retries, rescued_by_retry, latest_attempt_number, latest_node_id,
                           latest_outcome, latest_duration_ms
                    FROM job_overview ORDER BY job_id
                """)
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (f"job-{retried}", "task", 1, True, 2, "n2", "succeeded", 20),
        (f"job-{waiting}", "waiting", 0, False, None, None, None, None),
    ]
