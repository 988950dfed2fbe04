"""`python -m bench` (`make bench`): every benchmark in sequence, then one summary table.

Each benchmark starts its own server on a fresh database of one PostgreSQL: DATABASE_URL's server when it is
set, else an embedded one started once for the whole run. Each prints its figure next to a baseline measured in
the same run, writes bench/results/<name>.json, and the table is also written to bench/results/summary.json.
--only runs some of them; the size options scale them.
The exit status is 1 if a benchmark failed to run (ERROR), 0 otherwise: a missed goal is a figure, not a failure.

`python -m bench seed --database-url URL ...` instead fills one database with a synthetic history (bench/seed.py);
`python -m bench soak [--jobs N]` runs the long soak (bench/soak.py), which no plain run includes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    accept,
    big_history,
    many_at_once,
    nodes,
    peer,
    restart,
    seed,
    soak,
    start_latency,
    stats,
    throughput,
)
from bench.harness import (
    Context,
    Row,
    add_options,
    machine,
    postgres_server,
    print_table,
    rows_as_json,
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
    "stats": stats.run,
    "nodes": nodes.run,
}
BUDGET_SECONDS = 600.0


def format_load(averages: tuple[float, ...] | list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in averages)


def describe_machine(described: dict[str, Any]) -> str:
    return (
        f"{described['cpus']} x {described['cpu_model'] or 'unknown CPU'}, {described['memory_gib']} GiB, "
        f"{described['system']}, Python {described['python']}, {described['database']}"
    )


def main() -> None:
    if sys.argv[1:2] == ["seed"]:
        sys.exit(seed.main(sys.argv[2:]))
    if sys.argv[1:2] == ["soak"]:  # long: not among the benchmarks a plain `make bench` runs
        sys.exit(soak.main(sys.argv[2:]))
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    options = parser.parse_args()
    selected = options.only or list(BENCHMARKS)
    described = machine()
    print(f"bench: {', '.join(selected)}")
    print(f"machine: {describe_machine(described)}", flush=True)
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
                rows.extend(BENCHMARKS[name](context))
            except Exception as error:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                rows.append(Row(name, f"{type(error).__name__}: {error}".splitlines()[0][:100], "", None, "", "ERROR"))
            durations[name] = time.monotonic() - began
            print(f"  ({durations[name]:.0f} s)", flush=True)
    total = time.monotonic() - started
    ending = os.getloadavg()
    print(f"\nsummary ({total:.0f} s in all) on {describe_machine(described)}")
    print(
        f"load average (1, 5, 15 min): {format_load(described['load_averages'])} at the start, "
        f"{format_load(ending)} at the end"
    )
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
            "load_averages_at_end": ending,
            "rows": rows_as_json(rows),
        },
    )
    print(f"results: {path} and one file per benchmark beside it")
    sys.exit(1 if any(row.verdict == "ERROR" for row in rows) else 0)


if __name__ == "__main__":
    main()
