"""Chaos drill: kill -9 the service over and over while jobs run, then check that the history is exactly true.

    python -m bench.chaos [--jobs 300] [--rounds 10] [--reconcile-jobs 500]

Each job appends "<jobId> <attempt>" to an executions file, sleeps 1-3 s and exits with a code fixed for that job
(0 for most, 1-3 for some). After the last restart and once every job is final, it counts:
- lost: attempts recorded as `lost` (the service could not tell how a process ended);
- executed twice: jobs whose program ran more often than their attempts say it should have;
- wrong exit codes: jobs whose final status or exit code is not the one their program gave.
Then it measures how long the reconciliation of --reconcile-jobs running jobs takes after a kill -9.
Not part of the test suite; the figures go to stdout and bench/results/chaos.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    STARTED_ATTEMPTS_SQL,
    ServerProcess,
    fresh_database,
    postgres_server,
    wait_until,
    write_results,
)

FINAL_STATUSES = {"completed", "crashed", "cancelled"}
RECONCILED_LINE = re.compile(r"reconciled (\d+) running attempt\(s\) on node \S+ in ([0-9.]+) s")
JOB_PROGRAM = """#!/bin/sh
echo "$JOB_ID $JOB_ATTEMPT" >> "$1"
sleep "$2"
exit "$3"
"""


@dataclass(frozen=True)
class PlannedJob:
    name: str
    sleep_seconds: float
    exit_code: int

    @property
    def expected_runs(self) -> int:
        return 1 if self.exit_code == 0 else 2  # MAX_ATTEMPTS=2: a failure is retried once

    @property
    def expected_status(self) -> str:
        return "completed" if self.exit_code == 0 else "crashed"


def plan_jobs(count: int, generator: random.Random) -> list[PlannedJob]:
    return [
        PlannedJob(
            name=f"chaos-{index}",
            sleep_seconds=round(generator.uniform(1.0, 3.0), 2),
            exit_code=0 if generator.random() < 0.7 else generator.randint(1, 3),
        )
        for index in range(count)
    ]


def submit(client: httpx.Client, job: PlannedJob, executions: Path) -> str:
    response = client.post(
        "/jobs",
        json={"jobName": job.name, "arguments": [str(executions), str(job.sleep_seconds), str(job.exit_code)]},
    )
    response.raise_for_status()
    job_id: str = response.json()["jobId"]
    return job_id


def all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get("/jobs", params={"limit": 1000}).json()
    return jobs


def wait_until_final(client: httpx.Client, expected: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = all_jobs(client)
        if len(jobs) == expected and all(job["status"] in FINAL_STATUSES for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still not final after {timeout} s")
        time.sleep(0.25)


def reconciliation_times(log_file: Path) -> list[tuple[int, float]]:
    if not log_file.exists():
        return []
    return [(int(m.group(1)), float(m.group(2))) for m in RECONCILED_LINE.finditer(log_file.read_text("utf-8"))]


def chaos_rounds(database_url: str, folder: Path, job_count: int, rounds: int, seed: int) -> dict[str, Any]:
    generator = random.Random(seed)
    folder.mkdir(parents=True)
    program = folder / "job.sh"
    program.write_text(JOB_PROGRAM, encoding="utf-8")
    program.chmod(0o755)
    executions = folder / "executions.log"
    server = ServerProcess(
        database_url=database_url,
        data_dir=folder / "data",
        settings={
            "JOB_SCRIPT_PATH": str(program),
            # Few slots, so the jobs span every kill round instead of finishing before the first ones.
            "MAX_CONCURRENT_JOBS": "25",
            "MAX_ATTEMPTS": "2",
            "RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "LOG_LEVEL": "INFO",
        },
    )
    server.data_dir.mkdir(parents=True)
    planned = plan_jobs(job_count, generator)
    server.start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        names_by_id = {submit(client, job, executions): job for job in planned}
    for round_number in range(1, rounds + 1):
        time.sleep(generator.uniform(0.5, 2.5))
        server.kill_hard()
        print(f"  round {round_number}/{rounds}: kill -9, restart", flush=True)
        server.start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        final = wait_until_final(client, job_count, timeout=300)
        details = {job["jobId"]: client.get(f"/jobs/{job['jobId']}").json() for job in final}
    server.stop()

    runs = Counter(line.split()[0] for line in executions.read_text(encoding="utf-8").splitlines())
    lost = executed_twice = wrong_exit_codes = 0
    for job_id, detail in details.items():
        plan = names_by_id[job_id]
        attempts = detail["attemptHistory"]
        lost += sum(1 for attempt in attempts if attempt["outcome"] == "lost")
        # A program ran once per attempt that reached it; more executions than that means a double run.
        if runs[job_id] > len(attempts) or runs[job_id] > plan.expected_runs:
            executed_twice += 1
        if detail["status"] != plan.expected_status or detail["exitCode"] != plan.exit_code:
            wrong_exit_codes += 1
    times = reconciliation_times(server.log_file)
    return {
        "jobs": job_count,
        "rounds": rounds,
        "lost": lost,
        "executed_twice": executed_twice,
        "wrong_exit_codes": wrong_exit_codes,
        "reconciliations": [{"attempts": n, "seconds": s} for n, s in times],
    }


async def wait_until_started(database_url: str, running: int, timeout: float) -> None:
    database = await asyncpg.connect(database_url)
    try:

        async def all_started() -> bool:
            return bool(await database.fetchval(STARTED_ATTEMPTS_SQL) >= running)

        await wait_until(all_started, timeout=timeout, what=f"{running} sleepers started", interval=0.1)
    finally:
        await database.close()


def reconcile_many(database_url: str, folder: Path, running: int) -> dict[str, Any]:
    """Start `running` sleeping jobs, kill -9 the service, and time the reconciliation at the next start."""
    folder.mkdir(parents=True)
    server = ServerProcess(
        database_url=database_url,
        data_dir=folder / "data",
        settings={
            "JOB_SCRIPT_PATH": "/bin/sleep",
            "MAX_CONCURRENT_JOBS": str(running),
            "LOG_LEVEL": "INFO",
        },
    )
    server.data_dir.mkdir(parents=True)
    server.start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for index in range(running):
            client.post("/jobs", json={"jobName": f"sleeper-{index}", "arguments": ["20"]}).raise_for_status()
    # From the database, not /health's runningJobs: that counts a job from its claim, before its pid is committed
    # and its program released, and a kill -9 in between leaves a job that never ran (lost), not one to adopt.
    asyncio.run(wait_until_started(database_url, running, timeout=120))
    server.kill_hard()
    server.start()
    times = reconciliation_times(server.log_file)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        adopted = client.get("/health").json()["runningJobs"]
    server.stop()  # leave mode: the sleepers finish on their own within 20 s
    attempts, seconds = times[-1] if times else (0, float("nan"))
    return {"running": running, "reconciled": attempts, "adopted": adopted, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reconcile-jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261128)
    arguments = parser.parse_args()

    with postgres_server() as server_url, tempfile.TemporaryDirectory(prefix="jobmanager-chaos-") as folder:
        print(f"chaos: {arguments.jobs} jobs, {arguments.rounds} kill -9 rounds", flush=True)
        with fresh_database(server_url) as database_url:
            chaos = chaos_rounds(database_url, Path(folder) / "chaos", arguments.jobs, arguments.rounds, arguments.seed)
        print(f"reconcile: {arguments.reconcile_jobs} running jobs, kill -9, restart", flush=True)
        with fresh_database(server_url) as database_url:
            reconcile = reconcile_many(database_url, Path(folder) / "reconcile", arguments.reconcile_jobs)

    slowest = max((r["seconds"] for r in chaos["reconciliations"]), default=0.0)
    print()
    print(f"lost                 {chaos['lost']}")
    print(f"executed twice       {chaos['executed_twice']}")
    print(f"wrong exit codes     {chaos['wrong_exit_codes']}")
    print(f"slowest chaos reconciliation  {slowest:.3f} s over {len(chaos['reconciliations'])} restarts")
    print(
        f"reconciliation of {reconcile['running']} running jobs: {reconcile['seconds']:.3f} s "
        f"({reconcile['adopted']} adopted)  goal < 2 s"
    )
    path = write_results("chaos", {"chaos": chaos, "reconcile": reconcile})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
