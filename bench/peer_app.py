"""The procrastinate side of the peer benchmark: its app, its one task, and its worker's body.

A module of its own, never run as __main__, because procrastinate wants its App defined in an importable module.
procrastinate is the optional `bench` extra, so it is imported only when an app is made.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import procrastinate

TASK_NAME = "spawn_program"


async def spawn_program(program: str) -> None:
    """The task: run the program, as the service would, and fail if it fails."""
    process = await asyncio.create_subprocess_exec(program)
    code = await process.wait()
    if code != 0:
        raise RuntimeError(f"{program} exited with {code}")


def make_app(conninfo: str, pool_size: int) -> procrastinate.App:
    import procrastinate  # noqa: PLC0415  (the optional extra)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=pool_size))
    app.task(name=TASK_NAME)(spawn_program)
    return app


async def apply_schema(conninfo: str) -> None:
    app = make_app(conninfo, pool_size=1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def run_worker(conninfo: str, concurrency: int) -> None:
    """Work until SIGTERM, with `concurrency` jobs at once, woken by notifications like the service."""
    app = make_app(conninfo, pool_size=concurrency + 2)
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=True, listen_notify=True)
