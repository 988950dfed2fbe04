"""`python -m bench seed` on a real PostgreSQL: it fills only a database named on its command line, never one that
already holds jobs unless told to, and a fresh one gets exactly the attempts asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from bench import seed
from service import cli
from service.db.engine import create_engine, libpq_url
from service.domain.records import NewJob
from tests.support.stores import Stores

SeedCommand = Callable[[list[str]], int]


def _seed_directly(arguments: list[str]) -> int:
    return seed.main(arguments)


def _seed_through_jobmanager(arguments: list[str]) -> int:
    return cli.main(["bench", "seed", *arguments])


async def _counts(database_url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        jobs = await connection.fetchval("SELECT count(*) FROM jobs")
        attempts = await connection.fetchval("SELECT count(*) FROM attempts")
    finally:
        await connection.close()
    return int(jobs), int(attempts)


async def _submit_a_real_job(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        await Stores.over(engine).jobs.submit_job(
            NewJob(name="real-job", program="/bin/true", arguments=[], max_attempts=1)
        )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("command", [_seed_directly, _seed_through_jobmanager], ids=["python-m-bench", "jobmanager"])
def test_seeding_without_a_target_is_refused_even_with_a_configured_database(
    command: SeedCommand, database_url: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)  # what `jobmanager serve` would use: not a target for this

    status = command(["--attempts", "20"])

    assert status == seed.EXIT_REFUSED
    errors = capfd.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert "--database-url" in errors[0]
    assert asyncio.run(_counts(database_url)) == (0, 0)


def test_seeding_a_database_that_holds_jobs_is_refused_and_writes_nothing(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_submit_a_real_job(database_url))

    status = seed.main(["--database-url", database_url, "--attempts", "20"])

    assert status == seed.EXIT_REFUSED
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert "--into-existing" in errors[0]
    assert asyncio.run(_counts(database_url)) == (1, 0)


def test_seeding_a_fresh_database_adds_the_attempts_asked_for(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = seed.main(["--database-url", database_url, "--attempts", "120", "--days", "3"])

    assert status == 0
    jobs, attempts = asyncio.run(_counts(database_url))
    assert attempts == 120
    assert 0 < jobs <= attempts
    assert "seeded 120 attempts" in capsys.readouterr().out


def test_into_existing_adds_to_a_database_that_holds_jobs(database_url: str) -> None:
    asyncio.run(_submit_a_real_job(database_url))

    status = seed.main(["--database-url", database_url, "--attempts", "30", "--into-existing"])

    assert status == 0
    jobs, attempts = asyncio.run(_counts(database_url))
    assert attempts == 30
    assert jobs > 1
