"""GET /stats at a million attempts: p50 and p95 latency, against GET /health measured in the same run.

    python -m bench.stats [--attempts 1000000] [--requests 200] [--seed 1]

`python -m bench` runs it as one of its benchmarks, at --history-jobs attempts and --history-requests requests,
with fewer of the (slow) scans.
Seeds a fresh database with `python -m bench seed --attempts N` (the real command, progress bar and all), starts
the real server (`python -m service`) on it, and times, with one HTTP client, alternating requests:

- GET /health (one `SELECT 1`: the HTTP + database round trip every request pays) - the baseline;
- GET /stats (the rollup; nothing finished since the last request);
- GET /stats after 200 more attempts finished (the rollup folds them first);
- GET /stats?namePrefix=task, ?since=24h, ?since=3650d (a window of everything) and ?program=/opt/jobs/report.py:
  the filtered requests (`computedFrom` says how each was answered).

Goal: GET /stats p95 <= 100 ms at 1 M attempts. Results go to bench/results/stats.json.

To compare trees on one existing history (seeding a million attempts takes minutes; copying them, seconds):

    python -m bench.stats --template DATABASE --tree main=/work/main --tree new=. [--rounds 2]

copies DATABASE (`CREATE DATABASE ... TEMPLATE`, on DATABASE_URL's server) once per tree and round, starts each
tree's own server (`TREE/.venv/bin/python -m service`) on its copy, one after the other, times the same requests
and REBUILDS rollup rebuilds (an invalidation queued, then one GET /stats), and prints the medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.harness import (
    PROJECT_ROOT,
    Context,
    Row,
    ServerProcess,
    fresh_database,
    postgres_server,
    verdict,
    write_results,
)
from service.db.engine import libpq_url

NAME = "stats"
LABEL = "6 big history: GET /stats"
DEFAULT_SEED = 1
GOAL_P95_MS = 100.0
WARM_UP_REQUESTS = 10
FOLD_BATCH_ATTEMPTS = 200
FOLD_REQUESTS = 20
# A scan of the whole history takes seconds at a million attempts: a few are enough to know it.
SEEDED_PROGRAM = "/opt/jobs/report.py"
SCAN_REQUESTS = {
    "/stats?namePrefix=task": 10,
    "/stats?since=24h": 10,
    "/stats?since=3650d": 5,
    f"/stats?program={SEEDED_PROGRAM}": 10,
}
# Within `python -m bench`, which has a time budget and no goal for the scans: fewer of them, the order of magnitude.
SCAN_REQUESTS_IN_SUMMARY = {"/stats?namePrefix=task": 3, "/stats?since=24h": 3, "/stats?since=3650d": 1}
REBUILDS = 2
_INVALIDATE = "INSERT INTO stats_rollup_invalidations (reason) VALUES ('bench: rebuild')"
# Jobs that finish between two requests in the fold measurement: plain successes on a node of their own.
_FINISH_MORE = """
    WITH new_jobs AS (
        INSERT INTO jobs (name, program, arguments, status, max_attempts, attempts_count, next_attempt_at,
                          created_at, started_at, finished_at, exit_code)
        SELECT 'bench-fold-' || g, '/bin/true', '{}', 'completed', 1, 1, NULL, now(), now(), now(), 0
        FROM generate_series(1, $1) AS g
        RETURNING id
    )
    INSERT INTO attempts (job_id, attempt_number, node_id, outcome, exit_code, started_at, finished_at, duration_ms)
    SELECT id, 1, 'bench-fold-node', 'succeeded', 0, now(), now(), 5 FROM new_jobs
"""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: fraction 0.95 is p95."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


def summary(milliseconds: list[float]) -> dict[str, float]:
    return {
        "count": len(milliseconds),
        "p50_ms": round(percentile(milliseconds, 0.50), 2),
        "p95_ms": round(percentile(milliseconds, 0.95), 2),
        "max_ms": round(max(milliseconds, default=math.nan), 2),
    }


def timed(client: httpx.Client, path: str, check: Callable[[dict[str, Any]], None] | None = None) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    if check is not None:
        check(response.json())
    return elapsed_ms


def seed(database_url: str, attempts: int, seed_value: int) -> dict[str, float]:
    """`python -m bench seed` as a user runs it; its progress bar goes to this terminal."""
    started = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "seed",
            f"--database-url={database_url}",
            f"--attempts={attempts}",
            f"--seed={seed_value}",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    print(completed.stdout.strip(), flush=True)
    rollup = re.search(r"rollup took ([0-9.]+) s", completed.stdout)
    return {"seed_seconds": round(seconds, 1), "rollup_build_seconds": float(rollup.group(1)) if rollup else math.nan}


async def database_facts(database_url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(database_url)
    try:
        return {
            "postgresql": await connection.fetchval("SHOW server_version"),
            "jobs": await connection.fetchval("SELECT count(*) FROM jobs"),
            "attempts": await connection.fetchval("SELECT count(*) FROM attempts"),
            "database_size": await connection.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))"),
        }
    finally:
        await connection.close()


async def finish_more(database_url: str, count: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(_FINISH_MORE, count)
    finally:
        await connection.close()


def measure(
    base_url: str, database_url: str, requests: int, scan_requests: dict[str, int] = SCAN_REQUESTS
) -> dict[str, dict[str, Any]]:
    def from_rollup(body: dict[str, Any]) -> None:
        assert body["computedFrom"] == "rollup", body["computedFrom"]

    served: dict[str, set[str]] = {path: set() for path in scan_requests}

    def recorder(path: str) -> Callable[[dict[str, Any]], None]:
        def record(body: dict[str, Any]) -> None:
            served[path].add(str(body["computedFrom"]))

        return record

    health: list[float] = []
    stats: list[float] = []
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for _ in range(WARM_UP_REQUESTS):
            timed(client, "/health")
            timed(client, "/stats")
        # Alternating, so that a busy moment of the (shared) machine weighs on both alike.
        for _ in range(requests):
            health.append(timed(client, "/health"))
            stats.append(timed(client, "/stats", from_rollup))
        folds = []
        for _ in range(FOLD_REQUESTS):
            asyncio.run(finish_more(database_url, FOLD_BATCH_ATTEMPTS))
            folds.append(timed(client, "/stats", from_rollup))
        scans = {
            path: [timed(client, path, recorder(path)) for _ in range(count)] for path, count in scan_requests.items()
        }
    return {
        "health": summary(health),
        "stats": summary(stats),
        f"stats_after_{FOLD_BATCH_ATTEMPTS}_more_attempts": summary(folds),
        **{
            path: {**summary(values), "computed_from": "/".join(sorted(served[path]))} for path, values in scans.items()
        },
    }


async def invalidate(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(_INVALIDATE)
    finally:
        await connection.close()


def measure_rebuilds(base_url: str, database_url: str, count: int) -> dict[str, float]:
    """GET /stats right after an invalidation: the rebuild from a full scan, its vacuum, and the request."""
    seconds = []
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for _ in range(count):
            asyncio.run(invalidate(database_url))
            seconds.append(timed(client, "/stats") / 1000)
    return {"count": count, "median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2)}


def benchmark(
    server_url: str,
    folder: Path,
    *,
    attempts: int,
    requests: int,
    seed_value: int,
    scan_requests: dict[str, int] = SCAN_REQUESTS,
) -> dict[str, Any]:
    """Seed a fresh database on `server_url`, time the requests, print and write the results; returns them."""
    with fresh_database(server_url) as database_url:
        print(f"seeding {attempts:,} attempts ...", flush=True)
        seeding = seed(database_url, attempts, seed_value)
        facts = asyncio.run(database_facts(database_url))
        data_dir = folder / "data"
        data_dir.mkdir(parents=True)
        server = ServerProcess(
            database_url=database_url,
            data_dir=data_dir,
            settings={"NODE_ID": "bench-stats", "JOB_SCRIPT_PATH": "/bin/true", "LOG_LEVEL": "WARNING"},
        )
        server.start()
        try:
            print(f"timing {requests} x GET /stats and GET /health ...", flush=True)
            latencies = measure(server.base_url, database_url, requests, scan_requests)
        finally:
            server.stop()

    stats, health = latencies["stats"], latencies["health"]
    ratios = {"p50": stats["p50_ms"] / health["p50_ms"], "p95": stats["p95_ms"] / health["p95_ms"]}
    print()
    print(f"{'request':<42} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'p50 / health':>13}")
    for name, figures in latencies.items():
        print(
            f"{name:<42} {figures['p50_ms']:>9.2f} {figures['p95_ms']:>9.2f} {figures['max_ms']:>9.2f}"
            f" {figures['p50_ms'] / health['p50_ms']:>12.1f}x"
        )
    met = stats["p95_ms"] <= GOAL_P95_MS
    print(
        f"\nGET /stats p95 {stats['p95_ms']:.1f} ms at {facts['attempts']:,} attempts "
        f"({ratios['p95']:.1f}x GET /health's p95): goal <= {GOAL_P95_MS:.0f} ms {'met' if met else 'MISSED'}"
    )
    results: dict[str, Any] = {
        "goal_p95_ms": GOAL_P95_MS,
        "goal_met": met,
        "ratios_to_health": {key: round(value, 2) for key, value in ratios.items()},
        "latencies": latencies,
        "seeding": seeding,
        "history": facts,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "options": {"attempts": attempts, "requests": requests, "seed": seed_value},
    }
    path = write_results(NAME, results)
    print(f"results: {path}")
    return results


def row(results: dict[str, Any], attempts: int) -> Row:
    """The summary line of `python -m bench`."""
    stats, health = results["latencies"]["stats"], results["latencies"]["health"]
    return Row(
        LABEL,
        f"p95 {stats['p95_ms']:.1f} ms, p50 {stats['p50_ms']:.1f} ms at {attempts} attempts",
        f"GET /health p95 {health['p95_ms']:.2f} ms",
        results["ratios_to_health"]["p95"],
        f"p95 <= {results['goal_p95_ms']:.0f} ms",
        verdict(bool(results["goal_met"])),
    )


def run(context: Context) -> list[Row]:
    """As one benchmark of `python -m bench`: --history-jobs attempts, --history-requests requests."""
    options = context.options
    results = benchmark(
        context.server_url,
        context.scratch(NAME),
        attempts=options.history_jobs,
        requests=options.history_requests,
        seed_value=DEFAULT_SEED,
        scan_requests=SCAN_REQUESTS_IN_SUMMARY,
    )
    return [row(results, options.history_jobs)]


class TreeServer(ServerProcess):
    """The server of another checkout of the project (its own virtualenv and code), for comparisons."""

    def __init__(self, tree: Path, *, database_url: str, data_dir: Path, settings: dict[str, str]) -> None:
        super().__init__(database_url=database_url, data_dir=data_dir, settings=settings)
        self.tree = tree

    def start(self) -> None:
        console = open(self.data_dir / "console.log", "ab")  # noqa: SIM115  (handed to the child, closed below)
        try:
            self._process = subprocess.Popen(
                [str(self.tree / ".venv" / "bin" / "python"), "-m", "service"],
                cwd=self.tree,
                env=self._environment,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        deadline = time.monotonic() + 600  # its migrations run first
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode}; see {self.data_dir}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == httpx.codes.OK:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server of {self.tree} did not answer /health")


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(libpq_url(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def measure_tree(server_url: str, template: str, name: str, tree: Path, folder: Path, requests: int) -> dict[str, Any]:
    """One tree's server on its own copy of `template`: the requests of `measure`, then the rebuilds."""
    database = f"{template}_bench_{name}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{database}" TEMPLATE "{template}"'))
    try:
        database_url = libpq_url(make_url(server_url).set(database=database).render_as_string(hide_password=False))
        data_dir = folder / name
        data_dir.mkdir(parents=True)
        server = TreeServer(
            tree,
            database_url=database_url,
            data_dir=data_dir,
            settings={"NODE_ID": "bench-stats", "JOB_SCRIPT_PATH": "/bin/true", "LOG_LEVEL": "WARNING"},
        )
        server.start()
        try:
            latencies: dict[str, Any] = measure(server.base_url, database_url, requests)
            latencies["rebuild"] = measure_rebuilds(server.base_url, database_url, REBUILDS)
        finally:
            server.stop()
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    return latencies


def compare(server_url: str, template: str, trees: dict[str, Path], *, rounds: int, requests: int) -> dict[str, Any]:
    """Every tree in turn on a fresh copy of the same history, `rounds` times; the medians of the rounds."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    loads = []
    with tempfile.TemporaryDirectory(prefix="jobmanager-bench-stats-") as folder:
        for round_number in range(rounds):
            for name, tree in trees.items():
                print(f"round {round_number + 1}/{rounds}: {name} ({tree}) ...", flush=True)
                runs[name].append(
                    measure_tree(server_url, template, name, tree, Path(folder) / str(round_number), requests)
                )
                loads.append(round(os.getloadavg()[0], 2))
    medians: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():
        medians[name] = {}
        for request, figures in measured[0].items():
            medians[name][request] = {
                key: round(statistics.median(run[request][key] for run in measured), 2)
                if isinstance(value, int | float)
                else value
                for key, value in figures.items()
            }
    print()
    header = "".join(f" {name + ' p50 / p95 ms':>24}" for name in trees)
    print(f"{'request':<40}{header}  computedFrom")
    for request in medians[next(iter(trees))]:
        if request == "rebuild":
            continue
        cells = "".join(
            f" {medians[name][request]['p50_ms']:>10,.1f} / {medians[name][request]['p95_ms']:>9,.1f}   "
            for name in trees
        )
        served = " | ".join(str(medians[name][request].get("computed_from", "-")) for name in trees)
        print(f"{request:<40}{cells}  {served}")
    rebuilds = "".join(f" {medians[name]['rebuild']['median_s']:>22.1f} s " for name in trees)
    print(f"{'rollup rebuild (GET /stats after one)':<40}{rebuilds}")
    print(f"(medians of {rounds} rounds; load average 1 min after each run: {loads})")
    results = {
        "template": template,
        "trees": {k: str(v) for k, v in trees.items()},
        "rounds": rounds,
        "medians": medians,
        "runs": runs,
        "load_average_1m_after_each_run": loads,
    }
    path = write_results(f"{NAME}_compare", results)
    print(f"results: {path}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=1_000_000, help="attempts to seed (1000000)")
    parser.add_argument("--requests", type=int, default=200, help="timed GET /stats and GET /health each (200)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic history (1)")
    parser.add_argument("--template", help="compare trees on copies of this existing database instead of seeding")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=PATH", help="with --template: a checkout to compare"
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --template: runs of every tree (2)")
    options = parser.parse_args()
    if options.template:
        trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in options.tree)}
        if not trees:
            parser.error("--template needs at least one --tree NAME=PATH")
        with postgres_server() as server_url:
            compare(server_url, options.template, trees, rounds=options.rounds, requests=options.requests)
        return
    with postgres_server() as server_url, tempfile.TemporaryDirectory(prefix="jobmanager-bench-stats-") as folder:
        benchmark(
            server_url, Path(folder), attempts=options.attempts, requests=options.requests, seed_value=options.seed
        )


if __name__ == "__main__":
    main()
