"""Accept rate: POST /jobs from a concurrent client (32 connections, 10 s), against GET /health with the same client.

    python -m bench.accept [--connections 32] [--accept-seconds 10] [--client-processes 1]

The client is closed-loop: each connection sends its next request when the last one is answered (bench/load.py:
bench/http_client.py on asyncio, in --client-processes processes). The baseline is GET /health (one `SELECT 1`) with
the same client for the same time, measured first: if both rates are close, the client or the HTTP layer is the
limit, not the job insert. The service runs /bin/sleep with one slot, so the accepted jobs queue behind one sleeping
job and the figure is the API's alone, not shared with running jobs. Afterwards every jobId answered with a 201 must
be a row in the database. Goal: >= 1,500 accepted/s, p99 <= 25 ms, every accepted job stored.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psutil

from bench.harness import (
    Context,
    Row,
    conclude,
    connected,
    job_number,
    latency_summary_ms,
    run_standalone,
    running_service,
    verdict,
)
from bench.load import LoadPlan, LoadResult, closed_loop

NAME = "accept"
GOAL_RATE = 1500.0
GOAL_P99_MS = 25.0
BODY_TEMPLATE = '{"jobName": "accept-{n}", "arguments": ["3600"]}'


def describe(result: LoadResult, server_cores: float) -> dict[str, Any]:
    return {
        "requests_ok": result.ok,
        "errors": result.errors,
        "seconds": result.seconds,
        "rate_per_second": result.rate,
        "latency": latency_summary_ms(result.latencies),
        "client_processes": result.processes,
        "client_cores": result.client_cores,
        "server_process_cores": server_cores,
    }


def timed_load(plan: LoadPlan, processes: int, server_pid: int) -> tuple[LoadResult, float]:
    """Run the load and return it with the CPU the service process used meanwhile, in cores."""
    server = psutil.Process(server_pid)
    before = server.cpu_times()
    result = closed_loop(plan, processes)
    after = server.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return result, used / result.seconds if result.seconds else 0.0


async def count_stored(database_url: str, numbers: list[int]) -> int:
    async with connected(database_url) as database:
        stored: int = await database.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::bigint[])", numbers)
        return stored


def run(context: Context) -> list[Row]:
    options = context.options
    client = (
        f"bench.http_client on asyncio, {options.client_processes} process(es), {options.connections} connections, "
        f"{options.accept_seconds:.0f} s each"
    )
    print(f"accept: GET /health (baseline), then POST /jobs; client {client}", flush=True)
    settings = {
        "JOB_SCRIPT_PATH": "/bin/sleep",
        "MAX_CONCURRENT_JOBS": "1",
        "SHUTDOWN_MODE": "kill",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "LOG_LEVEL": options.log_level,
    }
    with running_service(context.server_url, context.scratch(NAME), settings) as (server, database_url):
        health, health_cores = timed_load(
            LoadPlan(server.base_url, "GET", "/health", options.connections, options.accept_seconds, 200),
            options.client_processes,
            server.pid,
        )
        print(f"  GET /health: {health.rate:.0f}/s, client {health.client_cores:.2f} cores, service {health_cores:.2f}")
        post = LoadPlan(
            server.base_url,
            "POST",
            "/jobs",
            options.connections,
            options.accept_seconds,
            201,
            body_template=BODY_TEMPLATE,
            keep_bodies=True,
        )
        accepted, accept_cores = timed_load(post, options.client_processes, server.pid)
        numbers = [job_number(json.loads(body)["jobId"]) for body in accepted.bodies]
        stored = asyncio.run(count_stored(database_url, numbers))
    baseline = describe(health, health_cores)
    figure = describe(accepted, accept_cores)
    figure["stored"] = stored
    figure["distinct_job_ids"] = len(set(numbers))
    p99 = figure["latency"]["p99_ms"]
    all_stored = stored == accepted.ok == len(set(numbers)) and accepted.errors == 0
    met = accepted.rate >= GOAL_RATE and p99 <= GOAL_P99_MS and all_stored
    print(
        f"  POST /jobs: {accepted.rate:.0f} accepted/s, p50 {figure['latency']['p50_ms']:.1f} ms, p99 {p99:.1f} ms, "
        f"{accepted.errors} errors, {stored}/{accepted.ok} in the database; client {accepted.client_cores:.2f} cores, "
        f"service {accept_cores:.2f}"
    )
    ratio = accepted.rate / health.rate if health.rate else None
    row = Row(
        benchmark="3 accept rate (POST /jobs)",
        figure=f"{accepted.rate:.0f}/s, p99 {p99:.1f} ms, {stored}/{accepted.ok} stored",
        baseline=f"GET /health {health.rate:.0f}/s, p99 {baseline['latency']['p99_ms']:.1f} ms",
        ratio=ratio,
        goal=f">= {GOAL_RATE:.0f}/s, p99 <= {GOAL_P99_MS:.0f} ms, all stored",
        verdict=verdict(met),
    )
    print(f"  {row.verdict}")
    return conclude(
        NAME,
        row,
        {
            "client": client,
            "connections": options.connections,
            "seconds": options.accept_seconds,
            "post_jobs": figure,
            "get_health": baseline,
            "ratio": ratio,
            "goal": {"rate_per_second": GOAL_RATE, "p99_ms": GOAL_P99_MS},
        },
    )


if __name__ == "__main__":
    run_standalone(__doc__, run)
