"""The command-line spawners the service is compared with: `xargs -P` and GNU parallel, each running the same
program --jobs times, --slots at a time (the service's MAX_CONCURRENT_JOBS), from start to exit.

    seq N | xargs -P SLOTS -n 1 PROGRAM                          (the number is the program's one argument)
    seq N | parallel --will-cite -j SLOTS --joblog LOG PROGRAM    (the same; the job log says how each ended)

Both read the numbers on their standard input, written by the bench. xargs reports a program's failure only in
its exit status (123); GNU parallel's job log has a line per job with its exit value, which the bench checks:
every one of the --jobs ran once and exited 0.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMEOUT_SECONDS = 300.0


def _numbers(jobs: int) -> str:
    return "".join(f"{number}\n" for number in range(1, jobs + 1))


def run_xargs(program: str, jobs: int, parallelism: int) -> dict[str, Any]:
    command = ["xargs", "-P", str(parallelism), "-n", "1", program]
    started = time.perf_counter()
    finished = subprocess.run(
        command, input=_numbers(jobs), text=True, capture_output=True, timeout=TIMEOUT_SECONDS, check=False
    )
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {finished.returncode}: {finished.stderr[-300:]!r}")
    return {"seconds": seconds, "jobs_per_second": jobs / seconds, "each_ran_once": True}


def read_joblog(text: str) -> dict[str, int]:
    """GNU parallel's --joblog: how many jobs it ran, how many exited 0 and with no signal, how many distinct."""
    lines = text.splitlines()
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:] if line]
    if header[:1] != ["Seq"] or "Exitval" not in header:
        raise ValueError(f"not a GNU parallel job log: {lines[:1]!r}")
    exit_value, signal_value, sequence = header.index("Exitval"), header.index("Signal"), header.index("Seq")
    return {
        "ran": len(rows),
        "distinct": len({row[sequence] for row in rows}),
        "succeeded": sum(1 for row in rows if row[exit_value] == "0" and row[signal_value] == "0"),
    }


def run_parallel(program: str, jobs: int, parallelism: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="jobmanager-bench-parallel-") as folder:
        joblog = Path(folder) / "joblog"
        command = ["parallel", "--will-cite", "-j", str(parallelism), "--joblog", str(joblog), program]
        started = time.perf_counter()
        finished = subprocess.run(
            command, input=_numbers(jobs), text=True, capture_output=True, timeout=TIMEOUT_SECONDS, check=False
        )
        seconds = time.perf_counter() - started
        if finished.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {finished.returncode}: {finished.stderr[-300:]!r}")
        counted = read_joblog(joblog.read_text(encoding="utf-8"))
    once = counted["ran"] == jobs and counted["distinct"] == jobs and counted["succeeded"] == jobs
    return {"seconds": seconds, "jobs_per_second": jobs / seconds, "each_ran_once": once, "joblog": counted}


def repeated(measure: Callable[[], dict[str, Any]], *, runs: int, budget_seconds: float) -> dict[str, Any]:
    """`measure()` up to `runs` times, fewer if another run would end after `budget_seconds`; the median of them."""
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    while len(results) < runs:
        elapsed = time.monotonic() - started
        if results and elapsed / len(results) * (len(results) + 1) > budget_seconds:
            break
        results.append(measure())
    return median_of(results)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "jobs_per_second": statistics.median(run["jobs_per_second"] for run in runs),
        "each_ran_once": all(run["each_ran_once"] for run in runs),
        "runs": runs,
    }
