"""Migrations down and up again on a database that holds jobs and attempts: what each downgrade keeps (and maps)
survives, and the schema that comes back up works."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.migrate import alembic_config


def _alembic(action: Callable[..., None], revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config, revision)

    return run


async def _migrate(engine: AsyncEngine, action: Callable[..., None], revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_alembic(action, revision))


async def _rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        return [dict(row._mapping) for row in await connection.execute(text(sql))]


async def _tables(engine: AsyncEngine) -> set[str]:
    rows = await _rows(engine, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def test_downgrade_to_each_revision_and_back_keeps_the_jobs_and_their_attempts(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("""
                INSERT INTO jobs (id, name, program, arguments, status, max_attempts, attempts_count, priority,
                                  idempotency_key, finished_at) OVERRIDING SYSTEM VALUE
                VALUES (1, 'kept', '/bin/true', '{a}', 'cancelled', 3, 3, 7, 'key-1', now())
            """)
        )
        await connection.execute(
            text("""
                INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, started_at, finished_at,
                                      stdout_tail)
                VALUES (1, 1, 'n', 'succeeded', 0, now(), now(), 'out'),
                       (1, 2, 'n', 'timed_out', NULL, now(), now(), NULL),
                       (1, 3, 'n', 'cancelled', NULL, now(), now(), NULL)
            """)
        )

    await _migrate(engine, command.downgrade, "0002")
    at_0002 = await _rows(engine, "SELECT attempt_number, outcome FROM attempts ORDER BY attempt_number")
    await _migrate(engine, command.downgrade, "0001")
    at_0001 = await _rows(engine, "SELECT name, status, attempts_count FROM jobs")
    await _migrate(engine, command.upgrade, "heads")
    back = await _rows(engine, "SELECT name, status, priority, program_name, idempotency_key FROM jobs")
    attempts_back = await _rows(engine, "SELECT attempt_number, outcome, stdout_tail FROM attempts ORDER BY 1")
    facts = await _rows(engine, "SELECT count(*) AS n FROM attempt_facts")

    # The older schema has no cancelled or timed_out attempt: both were ended by a signal the service sent.
    assert at_0002 == [
        {"attempt_number": 1, "outcome": "succeeded"},
        {"attempt_number": 2, "outcome": "killed"},
        {"attempt_number": 3, "outcome": "killed"},
    ]
    assert at_0001 == [{"name": "kept", "status": "cancelled", "attempts_count": 3}]
    # The columns 0003 added come back with their defaults: what they held is not kept by a downgrade.
    assert back == [
        {"name": "kept", "status": "cancelled", "priority": 0, "program_name": "default", "idempotency_key": None}
    ]
    assert [row["outcome"] for row in attempts_back] == ["succeeded", "killed", "killed"]
    assert all(row["stdout_tail"] is None for row in attempts_back)
    assert facts == [{"n": 3}]


async def test_downgrade_to_base_and_upgrade_again_gives_a_working_empty_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO jobs (name, program, arguments, max_attempts) VALUES ('gone', '/bin/true', '{}', 1)")
        )

    await _migrate(engine, command.downgrade, "base")
    at_base = await _tables(engine)
    await _migrate(engine, command.upgrade, "heads")
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO jobs (name, program, arguments, max_attempts) VALUES ('new', '/bin/true', '{}', 1)")
        )
    jobs = await _rows(engine, "SELECT name FROM jobs")

    assert at_base <= {"alembic_version"}  # base: the service's tables are gone, data with them, as intended
    assert jobs == [{"name": "new"}]
