"""Throughput: 2,000 no-op jobs end to end through the service, against a sequential subprocess.run loop.

    python -m bench.throughput [--jobs 2000] [--slots 32] [--connections 32] [--program /bin/true]

End to end: from the first POST /jobs to the moment the database says every job is final (the bench polls PostgreSQL
directly, not the API). The jobs are submitted by a lean asyncio client (bench/http_client.py) over --connections
connections while the service already runs the first ones, with MAX_CONCURRENT_JOBS=--slots. The baseline, in the
same run and the same (bench) process: `subprocess.run([program])` --jobs times in a row, once before the service
runs and once after; their mean is the baseline (the machine is shared: its load can change in between). Goal: ratio
>= 0.6.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from bench.harness import (
    FINAL_STATUSES,
    Context,
    Row,
    conclude,
    connected,
    run_standalone,
    running_service,
    submit_until_counted,
    verdict,
)

NAME = "throughput"
GOAL_RATIO = 0.6
FINISH_TIMEOUT_SECONDS = 300.0
WARM_UP_RUNS = 20


async def submit_and_finish(base_url: str, database_url: str, jobs: int, connections: int) -> dict[str, Any]:
    """POST `jobs` no-op jobs and wait until all are final; the times are measured from the first POST."""
    async with connected(database_url) as database:
        submitted, seconds = await submit_until_counted(
            base_url,
            database,
            jobs,
            connections=connections,
            name_prefix="noop",
            arguments=[],
            counting_sql="SELECT count(*) FROM jobs WHERE status = ANY($1)",
            sql_arguments=[FINAL_STATUSES],
            timeout=FINISH_TIMEOUT_SECONDS,
            what=f"{jobs} jobs final",
            interval=0.01,
        )
        statuses = dict(await database.fetch("SELECT status, count(*) FROM jobs GROUP BY status"))
    return {"seconds": seconds, "submit_seconds": submitted, "statuses": statuses}


def measure_service(context: Context) -> dict[str, Any]:
    """The service's end-to-end throughput (also used by the peer benchmark when run on its own)."""
    options = context.options
    settings = {
        "JOB_SCRIPT_PATH": options.program,
        "MAX_CONCURRENT_JOBS": str(options.slots),
        "LOG_LEVEL": options.log_level,
    }
    with running_service(context.server_url, context.scratch(NAME), settings) as (server, database_url):
        figures = asyncio.run(submit_and_finish(server.base_url, database_url, options.jobs, options.connections))
    figures["jobs_per_second"] = options.jobs / figures["seconds"]
    context.figures["throughput.jobs_per_second"] = figures["jobs_per_second"]
    return figures


def measure_baseline(program: str, runs: int) -> dict[str, Any]:
    for _ in range(WARM_UP_RUNS):
        subprocess.run([program], check=True)
    started = time.perf_counter()
    for _ in range(runs):
        subprocess.run([program], check=True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "jobs_per_second": runs / seconds}


def run(context: Context) -> list[Row]:
    options = context.options
    print(
        f"throughput: {options.jobs} x {options.program} through the service ({options.slots} slots, "
        f"submitted over {options.connections} connections: bench.http_client, one process)",
        flush=True,
    )
    print(f"baseline: {options.jobs} x subprocess.run([{options.program!r}]) in a row, before and after", flush=True)
    before = measure_baseline(options.program, options.jobs)
    service = measure_service(context)
    after = measure_baseline(options.program, options.jobs)
    # The mean of the two: on a shared machine the load can change while the service is measured.
    baseline = {
        "jobs_per_second": (before["jobs_per_second"] + after["jobs_per_second"]) / 2,
        "before": before,
        "after": after,
    }
    print(
        f"  service: {service['jobs_per_second']:.0f} jobs/s ({service['seconds']:.2f} s, of which submitting "
        f"{service['submit_seconds']:.2f} s; {service['statuses']})"
    )
    print(
        f"  baseline: {baseline['jobs_per_second']:.0f} jobs/s (before {before['jobs_per_second']:.0f}, "
        f"after {after['jobs_per_second']:.0f})"
    )
    ratio = service["jobs_per_second"] / baseline["jobs_per_second"]
    completed = service["statuses"].get("completed", 0)
    met = ratio >= GOAL_RATIO and completed == options.jobs
    row = Row(
        benchmark=f"1 throughput ({options.jobs} no-op jobs)",
        figure=f"{service['jobs_per_second']:.0f} jobs/s",
        baseline=f"subprocess.run loop {baseline['jobs_per_second']:.0f}/s",
        ratio=ratio,
        goal=f"ratio >= {GOAL_RATIO}",
        verdict=verdict(met),
    )
    print(f"  ratio {ratio:.2f} (goal >= {GOAL_RATIO}): {row.verdict}; completed {completed}/{options.jobs}")
    return conclude(
        NAME,
        row,
        {
            "jobs": options.jobs,
            "program": options.program,
            "slots": options.slots,
            "connections": options.connections,
            "service": service,
            "baseline": baseline,
            "ratio": ratio,
            "goal_ratio": GOAL_RATIO,
        },
    )


if __name__ == "__main__":
    run_standalone(__doc__, run)
