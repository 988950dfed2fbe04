"""Cross-node wake-ups: a job submitted anywhere wakes every node's listener, which survives a lost connection."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.records import NewJob
from service.supervisor.listener import DueJobListener
from tests.support.stores import Stores

WAIT_SECONDS = 10.0


class WakeRecorder:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.event.wait(), WAIT_SECONDS)
        self.event.clear()


async def test_a_submitted_job_wakes_a_listener_on_another_connection(stores: Stores, database_url: str) -> None:
    woken = WakeRecorder()
    listener = DueJobListener(database_url, woken)
    await listener.start()
    try:
        await woken.next()  # on connecting it wakes once, for what was submitted while nobody listened

        await stores.jobs.submit_job(NewJob(name="task-1", program="/bin/true", arguments=[], max_attempts=1))

        await woken.next()
    finally:
        await listener.stop()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    stores: Stores, database_url: str, engine: AsyncEngine
) -> None:
    woken = WakeRecorder()
    listener = DueJobListener(database_url, woken)
    await listener.start()
    try:
        await woken.next()
        async with engine.connect() as connection:
            killed = await connection.scalar(
                text("""
                    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE datname = current_database() AND query LIKE 'LISTEN%'
                """)
            )
        assert killed == 1

        await woken.next()  # reconnected, and woke again for anything missed meanwhile
        await stores.jobs.submit_job(NewJob(name="task-1", program="/bin/true", arguments=[], max_attempts=1))
        await woken.next()
    finally:
        await listener.stop()
