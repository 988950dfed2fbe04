"""One end-to-end round: `jobs` no-op jobs submitted by one client to a running service, until the last one's
recorded end, with the CPU every process below the service spent meanwhile and a check that each job ran once.

The clients: wrk (bench/post_jobs.lua: POST /jobs with a JSON body, every job named apart, keep-alive
connections), `ab -k` (one body for every job), and the bench's own client (bench/http_client.py, in the bench
process). The clock starts just before the client does and stops at the latest `finished_at` of the round's
jobs, as the database has it; the round is over once none of its jobs is still to finish.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load_tools, process_cpu
from bench.harness import FINAL_STATUSES, connected, submit_jobs, wait_until

# The client of each round, as the summary names it, and the command it needs (None: the bench's own).
CLIENT_COMMANDS: dict[str, str | None] = {"wrk": "wrk", "ab -k": "ab", "bench client": None}
FINISH_TIMEOUT_SECONDS = 300.0
WRK_THREADS = 2

_ROUND_JOBS_SQL = """
SELECT count(*) AS jobs,
       count(DISTINCT name) AS names,
       count(*) FILTER (WHERE status = 'completed' AND exit_code = 0 AND attempts_count = 1) AS completed_once,
       count(*) FILTER (WHERE name NOT LIKE $2 || '%') AS foreign_names,
       extract(epoch FROM min(created_at))::float8 AS first_created,
       extract(epoch FROM max(finished_at))::float8 AS last_finished
FROM jobs WHERE id > $1
"""
_ROUND_ATTEMPTS_SQL = """
SELECT count(*) AS attempts,
       count(DISTINCT job_id) AS jobs_attempted,
       count(*) FILTER (WHERE outcome = 'succeeded' AND exit_code = 0) AS succeeded,
       coalesce(sum(user_cpu_ms), 0)::bigint AS user_cpu_ms,
       coalesce(sum(system_cpu_ms), 0)::bigint AS system_cpu_ms
FROM attempts WHERE job_id > $1
"""


@dataclass(frozen=True)
class RoundResult:
    client: str
    jobs: int
    seconds: float
    """From just before the client started to the last job's recorded end."""
    client_seconds: float
    """Until the client had every answer."""
    checked: dict[str, Any]
    client_report: dict[str, Any]
    cpu: process_cpu.TreeCpu

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds

    @property
    def each_ran_once(self) -> bool:
        return bool(self.checked["each_ran_once"])


def _submit(client: str, base_url: str, jobs: int, connections: int, prefix: str, folder: Path) -> dict[str, Any]:
    """Have `client` POST the jobs; returns what it reported, once it had every answer."""
    if client == "wrk":
        report = load_tools.run_wrk(
            base_url, jobs=jobs, connections=connections, threads=WRK_THREADS, prefix=prefix,
            timeout=FINISH_TIMEOUT_SECONDS,
        )  # fmt: skip
        if report.created != jobs:
            raise RuntimeError(f"wrk: {report.created} of {jobs} jobs created ({report})")
        return vars(report)
    if client == "ab -k":
        body = folder / f"{prefix}.json"
        body.write_text(json.dumps({"jobName": prefix, "arguments": []}), encoding="utf-8")
        ab = load_tools.run_ab(
            f"{base_url}/jobs", jobs=jobs, connections=connections, body_file=body, timeout=FINISH_TIMEOUT_SECONDS
        )
        if ab.complete != jobs or ab.failed or ab.non_2xx:
            raise RuntimeError(f"ab: {ab}")
        return vars(ab)
    asyncio.run(submit_jobs(base_url, jobs, connections=connections, name_prefix=prefix, arguments=[]))
    return {"connections": connections}


async def _last_id(database_url: str) -> int:
    async with connected(database_url) as database:
        return int(await database.fetchval("SELECT coalesce(max(id), 0) FROM jobs"))


async def _wait_and_check(database_url: str, after_id: int, jobs: int, prefix: str) -> dict[str, Any]:
    async with connected(database_url) as database:

        async def all_final() -> bool:
            pending = await database.fetchval(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id > $1 AND status <> ALL($2::text[]))",
                after_id,
                list(FINAL_STATUSES),
            )
            return not pending

        await wait_until(all_final, timeout=FINISH_TIMEOUT_SECONDS, what=f"{jobs} jobs of {prefix} final")
        job_figures = dict(await database.fetchrow(_ROUND_JOBS_SQL, after_id, prefix))
        attempt_figures = dict(await database.fetchrow(_ROUND_ATTEMPTS_SQL, after_id))
    checked = {**job_figures, **attempt_figures}
    checked["each_ran_once"] = (
        checked["jobs"] == jobs
        and checked["completed_once"] == jobs
        and checked["foreign_names"] == 0
        and checked["attempts"] == jobs
        and checked["jobs_attempted"] == jobs
        and checked["succeeded"] == jobs
    )
    return checked


def run_round(
    client: str, *, base_url: str, database_url: str, service_pid: int, jobs: int, connections: int, prefix: str,
    folder: Path,
) -> RoundResult:  # fmt: skip
    """Submit `jobs` no-op jobs named `prefix...` with `client` and wait until every one has ended."""
    after_id = asyncio.run(_last_id(database_url))
    before = process_cpu.settled_snapshot(service_pid)
    started_at = time.time()
    started = time.perf_counter()
    report = _submit(client, base_url, jobs, connections, prefix, folder)
    client_seconds = time.perf_counter() - started
    checked = asyncio.run(_wait_and_check(database_url, after_id, jobs, prefix))
    after = process_cpu.settled_snapshot(service_pid)
    # ab sends one body, so one name; the others name every job apart.
    checked["each_ran_once"] = checked["each_ran_once"] and checked["names"] == (1 if client == "ab -k" else jobs)
    if checked["last_finished"] is None:
        raise RuntimeError(f"{client}: no job of {prefix} finished: {checked}")
    return RoundResult(
        client=client,
        jobs=jobs,
        seconds=checked["last_finished"] - started_at,
        client_seconds=client_seconds,
        checked=checked,
        client_report=report,
        cpu=process_cpu.tree_cpu(before, after),
    )
