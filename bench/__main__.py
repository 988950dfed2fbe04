"""`python -m bench` (`make bench`): every benchmark in sequence, then one summary table.

Each benchmark starts its own server on a fresh database of one PostgreSQL: DATABASE_URL's server when it is
set, else an embedded one started once for the whole run. Each prints its figure next to a baseline measured in
the same run, writes bench/results/<name>.json, and the table is also written to bench/results/summary.json.
--only runs some of them; the size options scale them (the defaults fit in about five minutes on a 2-core
machine, plus bench/stats.py's). bench/stats.py (GET /stats at 1 M attempts) runs last when it exists:
in-process if it has `run(context) -> list[Row]` like the others, else as
`python -m bench.stats --attempts=<--history-jobs> --requests=<--history-requests>` on the same server, its
results file read back into the table.
The exit status is 1 if a benchmark failed to run (ERROR), 0 otherwise: a missed goal is a figure, not a failure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import accept, big_history, many_at_once, peer, restart, start_latency, throughput
from bench.harness import (
    PROJECT_ROOT,
    RESULTS_DIR,
    Context,
    Row,
    add_options,
    machine,
    postgres_server,
    print_table,
    rows_as_json,
    verdict,
    write_results,
)

BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "throughput": throughput.run,
    "peer": peer.run,
    "accept": accept.run,
    "start_latency": start_latency.run,
    "many_at_once": many_at_once.run,
    "big_history": big_history.run,
    "restart": restart.run,
}
STATS = "stats"
STATS_LABEL = "6 big history: GET /stats"
STATS_TIMEOUT_SECONDS = 600.0
BUDGET_SECONDS = 600.0


def run_stats(context: Context) -> list[Row]:
    """bench/stats.py, written separately: in-process if it follows the protocol, else run with its own CLI."""
    if importlib.util.find_spec("bench.stats") is None:
        print("bench/stats.py does not exist yet: skipped", flush=True)
        return [Row(STATS_LABEL, "skipped", "bench/stats.py not found", None, "", "SKIP")]
    module = importlib.import_module("bench.stats")
    run = getattr(module, "run", None)
    if callable(run) and len(inspect.signature(run).parameters) == 1:
        rows: list[Row] = run(context)
        return rows
    options = context.options
    command = [
        sys.executable,
        "-m",
        "bench.stats",
        f"--attempts={options.history_jobs}",
        f"--requests={options.history_requests}",
    ]
    results = RESULTS_DIR / "stats.json"
    began = time.time()
    completed = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": context.server_url},
        timeout=STATS_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0 or not results.exists() or results.stat().st_mtime < began:
        return [Row(STATS_LABEL, f"python -m bench.stats: exit {completed.returncode}", "", None, "", "ERROR")]
    return [stats_row(json.loads(results.read_text(encoding="utf-8")), options.history_jobs)]


def stats_row(results: dict[str, Any], attempts: int) -> Row:
    """The summary line of bench/stats.py's results file (its own format)."""
    try:
        stats, health = results["latencies"]["stats"], results["latencies"]["health"]
        return Row(
            STATS_LABEL,
            f"p95 {stats['p95_ms']:.1f} ms, p50 {stats['p50_ms']:.1f} ms at {attempts} attempts",
            f"GET /health p95 {health['p95_ms']:.2f} ms",
            results["ratios_to_health"]["p95"],
            f"p95 <= {results['goal_p95_ms']:.0f} ms",
            verdict(bool(results["goal_met"])),
        )
    except (KeyError, TypeError) as error:
        return Row(STATS_LABEL, "ran; see its output above", f"unknown results format ({error})", None, "", "-")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser)
    parser.add_argument("--only", nargs="+", choices=[*BENCHMARKS, STATS], help="run only these benchmarks")
    options = parser.parse_args()
    selected = options.only or [*BENCHMARKS, STATS]
    described = machine()
    print(f"bench: {', '.join(selected)}")
    print(f"machine: {described}", flush=True)
    rows: list[Row] = []
    durations: dict[str, float] = {}
    loads: dict[str, float] = {}  # the machine is shared: how busy it was as each benchmark began
    started = time.monotonic()
    with postgres_server() as server_url, tempfile.TemporaryDirectory(prefix="jobmanager-bench-") as folder:
        context = Context(server_url=server_url, folder=Path(folder), options=options)
        for name in selected:
            loads[name] = os.getloadavg()[0]
            print(f"\n== {name} == (load average {loads[name]:.2f})", flush=True)
            began = time.monotonic()
            try:
                rows.extend(run_stats(context) if name == STATS else BENCHMARKS[name](context))
            except Exception as error:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                rows.append(Row(name, f"{type(error).__name__}: {error}".splitlines()[0][:100], "", None, "", "ERROR"))
            durations[name] = time.monotonic() - began
            print(f"  ({durations[name]:.0f} s)", flush=True)
    total = time.monotonic() - started
    print(f"\nsummary ({total:.0f} s in all; the machine had a load average of {described['load_average_1m']:.2f})")
    print_table(rows)
    if total > BUDGET_SECONDS:
        print(f"warning: the run took longer than {BUDGET_SECONDS:.0f} s; scale it down with the size options")
    path = write_results(
        "summary",
        {
            "machine": described,
            "seconds": total,
            "durations": durations,
            "load_average_at_start": loads,
            "rows": rows_as_json(rows),
        },
    )
    print(f"results: {path} and one file per benchmark beside it")
    sys.exit(1 if any(row.verdict == "ERROR" for row in rows) else 0)


if __name__ == "__main__":
    main()
