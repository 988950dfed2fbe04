"""The app in-process through Litestar's test client: polling a job over the API, counting the stored jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

WAIT_SECONDS = 15.0
POLL_SECONDS = 0.05

Client = AsyncTestClient[Litestar]


async def wait_for_job(client: Client, job_id: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll GET /jobs/{job_id} until `condition` holds; fail with the last answer after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = await client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if condition(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not reach the expected state within {WAIT_SECONDS} s; last seen: {job}")
        await asyncio.sleep(POLL_SECONDS)


async def count_jobs(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM jobs"))).scalar_one())
