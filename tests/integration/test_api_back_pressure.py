"""MAX_QUEUED_JOBS through the real app: past it, a 429 with Retry-After that names the limit and stores nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.settings import Settings
from tests.support.api import count_jobs
from tests.support.stores import Stores

FAR_FUTURE = "8000-01-01T00:00:00Z"  # never due: the jobs stay queued
WAIT_SECONDS = 15.0


def _app_settings(make_settings: Callable[..., Settings], tmp_path: Path, limit: int) -> Settings:
    script = tmp_path / "job.py"
    script.write_text("pass\n", encoding="utf-8")
    return make_settings(job_script_path=script.resolve(), max_queued_jobs=limit)


async def _insert_queued(engine: AsyncEngine, count: int) -> None:
    """Queued jobs written by someone else (another node): this node learns of them only by counting."""
    async with engine.begin() as connection:
        await connection.execute(
            text("""
                INSERT INTO jobs (name, program, status, max_attempts, next_attempt_at)
                SELECT 'elsewhere-' || n, '/bin/true', 'queued', 2, NULL FROM generate_series(1, :count) AS n
            """),
            {"count": count},
        )


async def test_past_the_limit_a_submission_is_a_429_that_stores_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, engine: AsyncEngine
) -> None:
    async with AsyncTestClient(app=create_app(_app_settings(make_settings, tmp_path, 3))) as client:
        accepted = [await client.post("/jobs", json={"jobName": f"j{n}", "runAt": FAR_FUTURE}) for n in range(3)]
        refused = await client.post("/jobs", json={"jobName": "one-too-many", "runAt": FAR_FUTURE})

        assert [response.status_code for response in accepted] == [201, 201, 201]
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) >= 1
        detail = refused.json()["detail"]
        assert "MAX_QUEUED_JOBS" in detail
        assert "3" in detail
        assert await count_jobs(engine) == 3


async def test_jobs_queued_by_another_node_are_counted_within_a_few_seconds(
    make_settings: Callable[..., Settings], tmp_path: Path, engine: AsyncEngine
) -> None:
    async with AsyncTestClient(app=create_app(_app_settings(make_settings, tmp_path, 10))) as client:
        first = await client.post("/jobs", json={"jobName": "first", "runAt": FAR_FUTURE})
        assert first.status_code == 201, first.text
        await _insert_queued(engine, 10)

        deadline = time.monotonic() + WAIT_SECONDS
        while (
            response := await client.post("/jobs", json={"jobName": "later", "runAt": FAR_FUTURE})
        ).status_code != 429:
            assert response.status_code == 201, response.text
            assert time.monotonic() < deadline, "the queue filled by another node was never counted"
            await asyncio.sleep(0.2)


async def test_zero_means_no_limit(make_settings: Callable[..., Settings], tmp_path: Path, engine: AsyncEngine) -> None:
    await _insert_queued(engine, 50)
    async with AsyncTestClient(app=create_app(_app_settings(make_settings, tmp_path, 0))) as client:
        response = await client.post("/jobs", json={"jobName": "unbounded", "runAt": FAR_FUTURE})

    assert response.status_code == 201, response.text


async def test_the_count_stops_at_its_bound_and_counts_only_queued_jobs(stores: Stores, engine: AsyncEngine) -> None:
    await _insert_queued(engine, 7)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE jobs SET status = 'completed' WHERE name = 'elsewhere-1'"))

    assert await stores.jobs.count_queued_jobs(up_to=100) == 6
    assert await stores.jobs.count_queued_jobs(up_to=4) == 4
