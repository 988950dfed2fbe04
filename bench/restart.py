"""Restart: reconciling 500 running jobs after `kill -9` of the service, against reconciling one.

    python -m bench.restart [--reconcile-jobs 500]

Reuses bench.chaos.reconcile_many: start the jobs (`sleep 20`), wait until all run, kill -9 the service, start it
again, and read the reconciliation's duration from its log. The baseline, in the same run, is the same drill with
one running job: the fixed cost of a reconciliation, so the ratio shows what the jobs add. The sleepers are left
running (SHUTDOWN_MODE=leave) and end on their own within 20 s. Goal: <= 2 s for --reconcile-jobs jobs, every one
of them adopted.
"""

from __future__ import annotations

import math

from bench.chaos import reconcile_many
from bench.harness import Context, Row, conclude, fresh_database, run_standalone, verdict

NAME = "restart"
GOAL_SECONDS = 2.0


def run(context: Context) -> list[Row]:
    running = context.options.reconcile_jobs
    print(f"restart: 1 running job (baseline), then {running}: kill -9, restart, reconcile", flush=True)
    with fresh_database(context.server_url) as database_url:
        baseline = reconcile_many(database_url, context.scratch(f"{NAME}-1"), 1)
    print(f"  1 job: {baseline['seconds']:.3f} s ({baseline['adopted']} adopted)", flush=True)
    with fresh_database(context.server_url) as database_url:
        figure = reconcile_many(database_url, context.scratch(f"{NAME}-{running}"), running)
    print(f"  {running} jobs: {figure['seconds']:.3f} s ({figure['adopted']} adopted)", flush=True)
    seconds = figure["seconds"]
    met = not math.isnan(seconds) and seconds <= GOAL_SECONDS and figure["adopted"] == running
    ratio = seconds / baseline["seconds"] if baseline["seconds"] else None
    row = Row(
        benchmark=f"7 restart (reconcile {running} after kill -9)",
        figure=f"{seconds:.3f} s, {figure['adopted']}/{running} adopted",
        baseline=f"1 job {baseline['seconds']:.3f} s",
        ratio=ratio,
        goal=f"<= {GOAL_SECONDS:.0f} s, all adopted",
        verdict=verdict(met),
    )
    print(f"  {row.verdict}")
    return conclude(
        NAME,
        row,
        {
            "running": figure,
            "baseline_one_job": baseline,
            "ratio": ratio,
            "goal_seconds": GOAL_SECONDS,
        },
    )


if __name__ == "__main__":
    run_standalone(__doc__, run)
