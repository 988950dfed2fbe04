"""Big history: GET /jobs, its first page and filtered pages, at 1 M jobs, against GET /health.

    python -m bench.big_history [--history-jobs 1000000] [--history-requests 200]

The service starts on a fresh database (its migrations create the schema); the bench then seeds --history-jobs
jobs and their attempts straight into PostgreSQL with set-based SQL (INSERT ... SELECT generate_series), with
some variety: six families of names, zero to three arguments, created over 90 days, 85 % completed (a tenth of
them after a retry), 12 % crashed (some by a signal), 3 % cancelled, and the newest 2 % still active (queued,
running on another node, or waiting for a retry). Then VACUUM ANALYZE, as autovacuum would have done.

Each page is requested --history-requests times in a row (after 10 unmeasured requests) with one httpx client:
GET /jobs (newest 100), GET /jobs?status=crashed, GET /jobs?status=queued,running,retried. The baseline is
GET /health (one `SELECT 1`) with the same client in the same run. Goal: each page's p50 <= 20 ms.
GET /stats at 1 M attempts is bench/stats.py's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    Context,
    Row,
    latency_summary_ms,
    run_standalone,
    running_service,
    verdict,
    write_results,
)

NAME = "big_history"
GOAL_P50_MS = 20.0
WARM_UP_REQUESTS = 10
HISTORY_DAYS = 90
PAGES = {
    "first page": "/jobs",
    "status=crashed": "/jobs?status=crashed",
    "status=queued,running,retried": "/jobs?status=queued,running,retried",
}

# $1 jobs in all, the newest $2 of them still active, created $3 seconds apart (oldest first, so that ids and
# created_at grow together as they do in the service). Queued and retried jobs are due in ten years: the service
# under test must not start seeded jobs, whose program does not exist.
SEED_JOBS = """
INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count, next_attempt_at,
                  created_at, started_at, finished_at, exit_code)
SELECT
    CASE g % 6
        WHEN 0 THEN 'backup'
        WHEN 1 THEN 'nightly-report-generation'
        WHEN 2 THEN 'task-' || g % 1000
        WHEN 3 THEN 'thumbnail-' || g % 97
        WHEN 4 THEN 'etl-orders'
        ELSE 'send-invoice-' || g % 5000
    END,
    '/opt/jobs/run-task',
    CASE g % 4
        WHEN 0 THEN '{}'::text[]
        WHEN 1 THEN ARRAY['input1']
        WHEN 2 THEN ARRAY['input1', 'output2']
        ELSE ARRAY['--date', to_char(created, 'YYYY-MM-DD'), '--verbose']
    END,
    status,
    2,
    attempts,
    CASE WHEN status IN ('queued', 'retried') THEN now() + interval '10 years' END,
    created,
    CASE WHEN attempts > 0 THEN created + interval '40 milliseconds' END,
    CASE WHEN status IN ('completed', 'crashed', 'cancelled')
         THEN created + make_interval(secs => attempts * 3 + 1) END,
    CASE
        WHEN status = 'completed' THEN 0
        WHEN status = 'crashed' AND g % 10 <> 0 THEN 1 + g % 3
    END
FROM (
    SELECT g, created,
        CASE
            WHEN status = 'completed' THEN 1 + (retry_draw < 0.1)::int
            WHEN status IN ('crashed') THEN 2
            WHEN status IN ('running', 'retried') THEN 1
            ELSE 0
        END AS attempts,
        status
    FROM (
        SELECT g, created, retry_draw,
            CASE
                WHEN g > $1 - $2 THEN (ARRAY['queued', 'running', 'retried'])[1 + g % 3]
                WHEN status_draw < 0.85 THEN 'completed'
                WHEN status_draw < 0.97 THEN 'crashed'
                ELSE 'cancelled'
            END AS status
        FROM (
            SELECT g, random() AS status_draw, random() AS retry_draw,
                   now() - make_interval(secs => ($1 - g) * $3) AS created
            FROM generate_series(1, $1::int) AS g
        ) AS drawn
    ) AS with_status
) AS planned
"""

# One row per attempt a job has had: every attempt but the last failed; the last one ended as the job did.
SEED_ATTEMPTS = """
INSERT INTO attempts (job_id, attempt_number, node_id, pid, process_started_at, outcome, exit_code, signal,
                      started_at, finished_at, duration_ms)
SELECT
    job_id, attempt_number, node_id, pid, started_at, outcome,
    CASE WHEN outcome IN ('succeeded', 'failed') THEN exit_code END,
    CASE WHEN outcome = 'killed' THEN 9 END,
    started_at,
    CASE WHEN outcome <> 'running' THEN started_at + make_interval(secs => duration_ms / 1000.0) END,
    CASE WHEN outcome <> 'running' THEN duration_ms END
FROM (
    SELECT
        j.id AS job_id,
        a AS attempt_number,
        (ARRAY['node-a', 'node-b', 'node-c'])[1 + j.id % 3] AS node_id,
        (10000 + (j.id * 7 + a) % 50000)::int AS pid,
        j.started_at + make_interval(secs => (a - 1) * 3) AS started_at,
        CASE
            WHEN a < j.attempts_count THEN 'failed'
            WHEN j.status = 'completed' THEN 'succeeded'
            WHEN j.status = 'running' THEN 'running'
            WHEN j.status = 'crashed' AND j.exit_code IS NULL THEN 'killed'
            ELSE 'failed'
        END AS outcome,
        CASE WHEN a < j.attempts_count OR j.status = 'retried' THEN 1 ELSE j.exit_code END AS exit_code,
        50 + (j.id * 7919 + a * 104729) % 2400 AS duration_ms
    FROM jobs j, generate_series(1, j.attempts_count::int) AS a
) AS planned
"""


async def seed(database_url: str, jobs: int) -> dict[str, Any]:
    database = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        await database.execute("SELECT setseed(0.20261128)")
        spacing = HISTORY_DAYS * 86400 / jobs
        await database.execute(SEED_JOBS, jobs, max(1, jobs // 50), spacing)
        await database.execute(SEED_ATTEMPTS)
        seeded = time.perf_counter() - started
        await database.execute("VACUUM ANALYZE jobs")
        await database.execute("VACUUM ANALYZE attempts")
        statuses = dict(await database.fetch("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status"))
        attempts = await database.fetchval("SELECT count(*) FROM attempts")
    finally:
        await database.close()
    return {
        "jobs": jobs,
        "attempts": attempts,
        "statuses": statuses,
        "seed_seconds": seeded,
        "vacuum_seconds": time.perf_counter() - started - seeded,
    }


def latencies(client: httpx.Client, path: str, requests: int) -> list[float]:
    measured = []
    for index in range(WARM_UP_REQUESTS + requests):
        started = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        if index >= WARM_UP_REQUESTS:
            measured.append(elapsed)
    return measured


def run(context: Context) -> list[Row]:
    options = context.options
    jobs, requests = options.history_jobs, options.history_requests
    print(f"big history: seeding {jobs} jobs, then {requests} x each page, one request at a time", flush=True)
    settings = {"JOB_SCRIPT_PATH": "/bin/true", "LOG_LEVEL": options.log_level}
    with (
        running_service(context.server_url, context.scratch(NAME), settings) as (server, database_url),
        httpx.Client(base_url=server.base_url, timeout=60) as client,
    ):
        seeded = asyncio.run(seed(database_url, jobs))
        print(
            f"  seeded {seeded['jobs']} jobs and {seeded['attempts']} attempts in {seeded['seed_seconds']:.1f} s "
            f"(+ {seeded['vacuum_seconds']:.1f} s VACUUM ANALYZE): {seeded['statuses']}",
            flush=True,
        )
        health = latency_summary_ms(latencies(client, "/health", requests))
        pages = {label: latency_summary_ms(latencies(client, path, requests)) for label, path in PAGES.items()}
    print(f"  GET /health: p50 {health['p50_ms']:.2f} ms, p99 {health['p99_ms']:.2f} ms")
    rows = []
    for label, figure in pages.items():
        ratio = figure["p50_ms"] / health["p50_ms"]
        rows.append(
            Row(
                benchmark=f"6 big history: GET /jobs {label}",
                figure=f"p50 {figure['p50_ms']:.1f} ms, p99 {figure['p99_ms']:.1f} ms",
                baseline=f"GET /health p50 {health['p50_ms']:.2f} ms",
                ratio=ratio,
                goal=f"p50 <= {GOAL_P50_MS:.0f} ms at {jobs} jobs",
                verdict=verdict(figure["p50_ms"] <= GOAL_P50_MS),
            )
        )
        print(f"  GET {PAGES[label]}: p50 {figure['p50_ms']:.2f} ms, p99 {figure['p99_ms']:.2f} ms: {rows[-1].verdict}")
    write_results(
        NAME,
        {
            "seed": seeded,
            "requests_per_page": requests,
            "get_health": health,
            "pages": {PAGES[label]: figure for label, figure in pages.items()},
            "goal_p50_ms": GOAL_P50_MS,
            "verdicts": {PAGES[label]: row.verdict for label, row in zip(pages, rows, strict=True)},
        },
    )
    return rows


if __name__ == "__main__":
    run_standalone(__doc__, run)
