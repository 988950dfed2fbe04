"""Many at once: 2,000 running `sleep` jobs on one node, against the same service idle.

    python -m bench.many_at_once [--many 2000] [--many-sleep 120]

The jobs sleep 120 s, not 30, because on a busy 2-core machine starting 2,000 of them can take
30 s, and the first would end before the measurement: what matters is that all of them sleep during the window.

The service (MAX_CONCURRENT_JOBS=--many) is measured idle first, then with --many sleeping jobs, each over the
same window: its resident memory (RSS of the service process alone), its thread count, and the CPU it uses while
the jobs sleep. "All running" is read from the database (attempts running with a pid), not from the API. The
sleepers' exit keepers are separate processes: their count and summed RSS are reported, not judged. The service
stops with SHUTDOWN_MODE=kill, which ends the sleepers. Goal: RSS <= 250 MB, threads bounded (at most the idle
count + 16, not one per job), CPU <= 5 % of a core while they sleep.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil

from bench.harness import (
    STARTED_ATTEMPTS_SQL,
    Context,
    Row,
    conclude,
    connected,
    run_standalone,
    running_service,
    submit_until_counted,
    verdict,
)

NAME = "many_at_once"
GOAL_RSS_MB = 250.0
GOAL_EXTRA_THREADS = 16
GOAL_CPU_PERCENT = 5.0
WINDOW_SECONDS = 5.0
SETTLE_SECONDS = 2.0
RAMP_TIMEOUT_SECONDS = 300.0


def sample(pid: int, seconds: float) -> dict[str, Any]:
    """The service process over a window: RSS and threads at its end, CPU used during it."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    after = process.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "rss_mb": process.memory_info().rss / 2**20,
        "threads": process.num_threads(),
        "open_files": process.num_fds(),
        "cpu_percent_of_a_core": 100 * cpu / seconds,
    }


def described(figures: dict[str, Any]) -> str:
    return f"RSS {figures['rss_mb']:.0f} MB, {figures['threads']} threads, CPU {figures['cpu_percent_of_a_core']:.1f} %"


def keepers(pid: int) -> dict[str, Any]:
    children = psutil.Process(pid).children()
    rss = 0
    for child in children:
        try:
            rss += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return {"processes": len(children), "rss_mb_sum": rss / 2**20}


async def running_with_pid(database_url: str) -> int:
    async with connected(database_url) as database:
        count: int = await database.fetchval(STARTED_ATTEMPTS_SQL)
        return count


async def ramp(base_url: str, database_url: str, many: int, sleep_seconds: int, connections: int) -> float:
    """Submit the sleepers and return the seconds until all run."""
    async with connected(database_url) as database:
        _, seconds = await submit_until_counted(
            base_url,
            database,
            many,
            connections=connections,
            name_prefix="sleeper",
            arguments=[str(sleep_seconds)],
            counting_sql=STARTED_ATTEMPTS_SQL,
            timeout=RAMP_TIMEOUT_SECONDS,
            what=f"{many} sleepers running",
            interval=0.1,
        )
        return seconds


def run(context: Context) -> list[Row]:
    options = context.options
    many, sleep_seconds = options.many, options.many_sleep
    print(f"many at once: the idle service, then {many} x sleep {sleep_seconds} ({WINDOW_SECONDS:.0f} s windows)")
    settings = {
        "JOB_SCRIPT_PATH": "/bin/sleep",
        "MAX_CONCURRENT_JOBS": str(many),
        "SHUTDOWN_MODE": "kill",
        "SHUTDOWN_GRACE_SECONDS": "10",
        "LOG_LEVEL": options.log_level,
    }
    with running_service(context.server_url, context.scratch(NAME), settings) as (server, database_url):
        time.sleep(SETTLE_SECONDS)  # let start-up work (migrations, keeper build, first claim round) finish
        idle = sample(server.pid, WINDOW_SECONDS)
        print(f"  idle: {described(idle)}, {idle['open_files']} open files", flush=True)
        ramp_seconds = asyncio.run(ramp(server.base_url, database_url, many, sleep_seconds, options.connections))
        print(f"  {many} sleepers running after {ramp_seconds:.1f} s", flush=True)
        loaded = sample(server.pid, WINDOW_SECONDS)
        still_running = asyncio.run(running_with_pid(database_url))
        loaded["keepers"] = keepers(server.pid)
        print(
            f"  loaded: {described(loaded)}, {loaded['open_files']} open files; {still_running} still running at "
            f"the window's end; {loaded['keepers']['processes']} exit keepers, "
            f"{loaded['keepers']['rss_mb_sum']:.0f} MB RSS summed (shared pages counted each time)",
            flush=True,
        )
    valid = still_running >= many
    thread_limit = idle["threads"] + GOAL_EXTRA_THREADS
    met = (
        valid
        and loaded["rss_mb"] <= GOAL_RSS_MB
        and loaded["threads"] <= thread_limit
        and loaded["cpu_percent_of_a_core"] <= GOAL_CPU_PERCENT
    )
    ratio = loaded["rss_mb"] / idle["rss_mb"]
    row = Row(
        benchmark=f"5 many at once ({many} x sleep {sleep_seconds})",
        figure=described(loaded),
        baseline=f"idle: {described(idle)}",
        ratio=ratio,
        goal=f"RSS <= {GOAL_RSS_MB:.0f} MB, threads <= {thread_limit}, CPU <= {GOAL_CPU_PERCENT:.0f} %",
        verdict=verdict(met),
    )
    if not valid:
        print(f"  only {still_running} of {many} jobs still ran at the window's end: raise --many-sleep")
    print(f"  RSS ratio {ratio:.2f}: {row.verdict}")
    return conclude(
        NAME,
        row,
        {
            "jobs": many,
            "sleep_seconds": sleep_seconds,
            "window_seconds": WINDOW_SECONDS,
            "ramp_seconds": ramp_seconds,
            "idle": idle,
            "loaded": loaded,
            "still_running_after_window": still_running,
            "rss_ratio": ratio,
            "goal": {"rss_mb": GOAL_RSS_MB, "threads": thread_limit, "cpu_percent_of_a_core": GOAL_CPU_PERCENT},
        },
    )


if __name__ == "__main__":
    run_standalone(__doc__, run)
