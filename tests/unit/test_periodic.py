"""The maintenance loops' shared shape: rounds at their interval, failures survived, a stop that lets a round end."""

from __future__ import annotations

import asyncio

from service.db.errors import DatabaseUnavailableError
from service.supervisor.periodic import PeriodicTask


async def test_a_stop_lets_the_round_under_way_finish() -> None:
    began, may_end = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def slow_round() -> None:
        began.set()
        await may_end.wait()
        finished.append(True)

    periodic = PeriodicTask("slow", slow_round, interval_seconds=60)
    periodic.start()
    await asyncio.wait_for(began.wait(), 5)
    stopping = asyncio.create_task(periodic.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop() returned while a round was still running"
    may_end.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [True]
    assert not periodic.running


async def test_a_round_that_outlasts_the_stop_wait_is_cut_off() -> None:
    async def endless_round() -> None:
        await asyncio.Event().wait()

    periodic = PeriodicTask("endless", endless_round, interval_seconds=60, stop_wait_seconds=0.05)
    periodic.start()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(periodic.stop(), 5)
    assert not periodic.running


async def test_failing_rounds_are_logged_and_the_loop_goes_on() -> None:
    rounds = 0
    third = asyncio.Event()

    async def failing_round() -> None:
        nonlocal rounds
        rounds += 1
        if rounds >= 3:
            third.set()
        if rounds == 1:
            raise DatabaseUnavailableError("connection refused")
        raise ValueError("a bug, not a hiccup")

    periodic = PeriodicTask("failing", failing_round, interval_seconds=0.01)
    periodic.start()
    await asyncio.wait_for(third.wait(), 5)
    assert periodic.running
    await periodic.stop()


async def test_the_first_round_waits_its_delay_and_a_stop_meanwhile_runs_none() -> None:
    rounds = 0

    async def counted_round() -> None:
        nonlocal rounds
        rounds += 1

    periodic = PeriodicTask("delayed", counted_round, interval_seconds=60, first_delay_seconds=60)
    periodic.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(periodic.stop(), 5)
    assert rounds == 0
