"""Peers: the same 2,000 no-op jobs through procrastinate, whose task spawns the same program (goal: service >= 5x),
and through `xargs -P` and GNU parallel (bench/spawn_peers.py; a comparison, with no target).

    python -m bench.peer [--jobs 2000] [--slots 32] [--connections 32] [--program /bin/true]

procrastinate (PostgreSQL-based task queue; the optional `bench` extra: pip install -e '.[bench]') gets a fresh
database of the same server. Its worker runs in a separate process with concurrency --slots (the service's
MAX_CONCURRENT_JOBS in the throughput benchmark), listening for notifications like the service does; each task
runs the program with asyncio.create_subprocess_exec and fails on a non-zero exit. The bench process defers the
jobs over --connections concurrent defers and polls procrastinate_jobs until all have succeeded: the same
end-to-end clock as the throughput benchmark. The service's figure is the throughput benchmark's of the same run
(measured here when this benchmark runs on its own): the median of its rounds with the bench's own client.
Skipped, saying so, when procrastinate is not installed. xargs -P and GNU parallel run the program --slots at
a time, three times each (the median counts; fewer when the runs would take longer than SPAWNER_BUDGET_SECONDS
on a busy machine); GNU parallel comes from apt (bench/load_tools.py), and its row says
why when it could not be had.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
from typing import Any

import asyncpg

from bench import load_tools, peer_app, spawn_peers, throughput
from bench.harness import (
    PROJECT_ROOT,
    Context,
    Row,
    conclude,
    fresh_database,
    run_standalone,
    verdict,
    wait_until,
    write_results,
)

NAME = "peer"
GOAL_RATIO = 5.0
WORKER_READY_TIMEOUT_SECONDS = 30.0
FINISH_TIMEOUT_SECONDS = 600.0
WORKER_STOP_TIMEOUT_SECONDS = 30.0
INSTALL_HINT = "pip install -e '.[bench]'"
SPAWNER_RUNS = 3
SPAWNER_BUDGET_SECONDS = 30.0  # GNU parallel takes seconds a run on a busy machine: fewer runs then
SPAWNER_GOAL = "none (a comparison)"


def procrastinate_installed() -> bool:
    return importlib.util.find_spec("procrastinate") is not None


async def defer_and_finish(conninfo: str, jobs: int, connections: int, program: str) -> dict[str, Any]:
    app = peer_app.make_app(conninfo, pool_size=connections)
    database = await asyncpg.connect(conninfo)
    try:

        async def all_done() -> bool:
            done = await database.fetchval(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')"
            )
            return bool(done >= jobs)

        async with app.open_async():
            task = app.tasks[peer_app.TASK_NAME]
            indices = iter(range(jobs))

            async def one_connection() -> None:
                for _ in indices:
                    await task.defer_async(program=program)

            started = time.perf_counter()
            await asyncio.gather(*(one_connection() for _ in range(connections)))
            deferred = time.perf_counter() - started
        await wait_until(all_done, timeout=FINISH_TIMEOUT_SECONDS, what=f"{jobs} procrastinate jobs done")
        seconds = time.perf_counter() - started
        statuses = dict(await database.fetch("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"))
    finally:
        await database.close()
    return {"seconds": seconds, "defer_seconds": deferred, "statuses": statuses, "jobs_per_second": jobs / seconds}


async def wait_for_worker(conninfo: str, worker: subprocess.Popen[bytes]) -> None:
    database = await asyncpg.connect(conninfo)
    try:

        async def registered() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"the procrastinate worker exited with {worker.returncode}")
            return bool(await database.fetchval("SELECT count(*) FROM procrastinate_workers"))

        await wait_until(registered, timeout=WORKER_READY_TIMEOUT_SECONDS, what="procrastinate worker ready")
    finally:
        await database.close()


def measure_procrastinate(context: Context) -> dict[str, Any]:
    options = context.options
    with fresh_database(context.server_url) as conninfo:
        asyncio.run(peer_app.apply_schema(conninfo))
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.peer", "--worker", conninfo, str(options.slots)],
            cwd=PROJECT_ROOT,
            env={key: value for key, value in os.environ.items() if key != "DATABASE_URL"},
        )
        try:
            asyncio.run(wait_for_worker(conninfo, worker))
            return asyncio.run(defer_and_finish(conninfo, options.jobs, options.connections, options.program))
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(WORKER_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def service_rate(context: Context) -> tuple[float, str]:
    """The service's end-to-end jobs/s of this run, measured now if the throughput benchmark did not run."""
    rate = context.figures.get("throughput.jobs_per_second")
    if rate is not None:
        return rate, "the throughput benchmark of this run, bench client"
    print("  the service's throughput, measured now (the throughput benchmark did not run):", flush=True)
    rate = throughput.measure_service(context)["jobs_per_second"]
    context.figures["throughput.jobs_per_second"] = rate
    return rate, "measured by this benchmark, bench client"


def procrastinate_row(context: Context) -> Row:
    options = context.options
    benchmark = f"2 peer ({options.jobs} jobs via procrastinate)"
    goal = f"service >= {GOAL_RATIO:.0f}x procrastinate"
    if not procrastinate_installed():
        message = f"procrastinate is not installed ({INSTALL_HINT}, or make bench)"
        print(f"peer: SKIPPED: {message}", flush=True)
        write_results(NAME, {"skipped": message})
        return Row(benchmark, "skipped", message, None, goal, "SKIP")
    print(
        f"peer: {options.jobs} x {options.program} through procrastinate (worker process, concurrency "
        f"{options.slots}; deferred over {options.connections} concurrent defers)",
        flush=True,
    )
    peer = measure_procrastinate(context)
    print(f"  procrastinate: {peer['jobs_per_second']:.0f} jobs/s ({peer['seconds']:.2f} s; {peer['statuses']})")
    rate, source = service_rate(context)
    ratio = rate / peer["jobs_per_second"]
    succeeded = peer["statuses"].get("succeeded", 0)
    row = Row(
        benchmark=benchmark,
        figure=f"service {rate:.0f} jobs/s",
        baseline=f"procrastinate {peer['jobs_per_second']:.0f}/s",
        ratio=ratio,
        goal=goal,
        verdict=verdict(ratio >= GOAL_RATIO and succeeded == options.jobs),
    )
    print(f"  service {rate:.0f} jobs/s ({source}); ratio {ratio:.2f} (goal >= {GOAL_RATIO}): {row.verdict}")
    conclude(
        NAME,
        row,
        {
            "jobs": options.jobs,
            "program": options.program,
            "concurrency": options.slots,
            "procrastinate": peer,
            "service_jobs_per_second": rate,
            "service_figure_from": source,
            "ratio": ratio,
            "goal_ratio": GOAL_RATIO,
        },
    )
    return row


def spawner_rows(context: Context) -> list[Row]:
    """xargs -P and GNU parallel, each SPAWNER_RUNS times; the service's ratio to the median of each."""
    options = context.options
    missing = load_tools.ensure_tools(["xargs", "parallel"])
    spawners = {
        f"xargs -P {options.slots}": ("xargs", spawn_peers.run_xargs),
        f"GNU parallel -j {options.slots}": ("parallel", spawn_peers.run_parallel),
    }
    rows: list[Row] = []
    results: dict[str, Any] = {}
    for label, (command, runner) in spawners.items():
        benchmark = f"2 peer ({options.jobs} jobs via {label})"
        if command in missing:
            reason = load_tools.not_measured(command, missing[command])
            print(f"  {label}: {reason}", flush=True)
            results[label] = {"skipped": reason}
            rows.append(Row(benchmark, "not measured", reason, None, SPAWNER_GOAL, "SKIP"))
            continue
        measured = spawn_peers.repeated(
            functools.partial(runner, options.program, options.jobs, options.slots),
            runs=SPAWNER_RUNS,
            budget_seconds=SPAWNER_BUDGET_SECONDS,
        )
        rate, source = service_rate(context)
        peer_rate = measured["jobs_per_second"]
        once = "" if measured["each_ran_once"] else ", NOT each run once"
        print(
            f"  {label}: {peer_rate:.0f} jobs/s (median of {len(measured['runs'])}){once}; "
            f"service {rate:.0f} ({source})"
        )
        results[label] = {**measured, "service_jobs_per_second": rate, "ratio": rate / peer_rate}
        rows.append(
            Row(benchmark, f"service {rate:.0f} jobs/s", f"{label} {peer_rate:.0f}/s{once}", rate / peer_rate,
                SPAWNER_GOAL, "-")
        )  # fmt: skip
    write_results("spawners", {"jobs": options.jobs, "program": options.program, "spawners": results})
    return rows


def run(context: Context) -> list[Row]:
    return [procrastinate_row(context), *spawner_rows(context)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        parser = argparse.ArgumentParser(prog="python -m bench.peer --worker")
        parser.add_argument("--worker", dest="conninfo", required=True)
        parser.add_argument("concurrency", type=int)
        arguments = parser.parse_args()
        asyncio.run(peer_app.run_worker(arguments.conninfo, arguments.concurrency))
        return
    run_standalone(__doc__, run)


if __name__ == "__main__":
    main()
