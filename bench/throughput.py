"""Throughput: 2,000 no-op jobs end to end through the service, submitted by wrk, `ab -k` and the bench's own
client, against a sequential subprocess.run loop measured in the same run; and the CPU each job costs.

    python -m bench.throughput [--jobs 2000] [--rounds 3] [--slots 32] [--connections 32] [--program /bin/true]

One service (MAX_CONCURRENT_JOBS=--slots) on a fresh database. Each round submits --jobs jobs with one client over
--connections keep-alive connections while the service already runs the first ones (bench/end_to_end.py), and
waits for the last one's recorded end; --rounds rounds of each client, in a rotating order. The baseline:
`subprocess.run([program])` --jobs times in a row from the bench process, before the first round and after every
round; a round's ratio is to the mean of the loops just before and after it (the machine is shared: its load
changes). Each figure is the median over the rounds; a round that would end after ROUNDS_BUDGET_SECONDS is not
started (on a busy machine). Goal: ratio >= 0.6, every job run exactly once, succeeded.

CPU per job (bench/process_cpu.py, /proc/<pid>/stat before and after each round): the service process's own
user + system time (goal <= 0.6 ms); its exit keepers' (everything below the service, less the programs); a
long-lived child's own, reported apart (a fork server, when the service has one); and the programs' own, as the
same program costs in the baseline loop (the attempts table records it in whole milliseconds per attempt: zero
for a no-op program). The CPU figures are the medians over the rounds whose client kept its connections alive.
wrk and ab come from apt (bench/load_tools.py); without them their rows say why they were not measured.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import time
from typing import Any

from bench import end_to_end, load_tools
from bench.end_to_end import CLIENT_COMMANDS, RoundResult
from bench.harness import Context, Row, run_standalone, running_service, verdict, write_results

NAME = "throughput"
GOAL_RATIO = 0.6
GOAL_SERVICE_CPU_MS = 0.6
WARM_UP_RUNS = 20
# On a busy machine a round takes several times as long: fewer rounds then, so that `make bench` ends in time.
ROUNDS_BUDGET_SECONDS = 120.0
NO_TARGET = "none (a breakdown)"
PREFIXES = {"wrk": "wrk", "ab -k": "ab", "bench client": "client"}


def measure_baseline(program: str, runs: int) -> dict[str, float]:
    """`runs` x subprocess.run in a row: jobs/s, and the CPU of the bench (parent) and of the program per run."""
    for _ in range(WARM_UP_RUNS):
        subprocess.run([program], check=True)
    parent, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for _ in range(runs):
        subprocess.run([program], check=True)
    seconds = time.perf_counter() - started
    parent_after, children_after = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )

    def per_run_ms(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
        return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000 / runs

    return {
        "seconds": seconds,
        "jobs_per_second": runs / seconds,
        "parent_cpu_ms_per_run": per_run_ms(parent, parent_after),
        "program_cpu_ms_per_run": per_run_ms(children, children_after),
    }


def _round_figures(result: RoundResult, baseline_rate: float, program_cpu_ms: float) -> dict[str, Any]:
    jobs = result.jobs
    helpers_ms = sum(helper.own for helper in result.cpu.helpers) * 1000 / jobs
    below_ms = result.cpu.descendants * 1000 / jobs
    return {
        "client": result.client,
        "jobs_per_second": result.jobs_per_second,
        "seconds": result.seconds,
        "client_seconds": result.client_seconds,
        "baseline_jobs_per_second": baseline_rate,
        "ratio": result.jobs_per_second / baseline_rate,
        "each_ran_once": result.each_ran_once,
        "kept_alive": result.client != "ab -k" or result.client_report.get("keep_alive") == jobs,
        "service_cpu_ms": result.cpu.own * 1000 / jobs,
        "service_user_ms": result.cpu.user * 1000 / jobs,
        "service_system_ms": result.cpu.system * 1000 / jobs,
        "below_service_cpu_ms": below_ms,
        "keepers_cpu_ms": below_ms - program_cpu_ms,
        "helpers_cpu_ms": helpers_ms,
        "helpers": [vars(helper) for helper in result.cpu.helpers],
        "programs_recorded_cpu_ms": (result.checked["user_cpu_ms"] + result.checked["system_cpu_ms"]) / jobs,
        "checked": result.checked,
        "client_report": result.client_report,
    }


def measure(context: Context, clients: list[str]) -> dict[str, Any]:
    """Rounds of each client against one service, with a baseline loop before the first and after each."""
    options = context.options
    settings = {"JOB_SCRIPT_PATH": options.program, "MAX_CONCURRENT_JOBS": str(options.slots)}
    settings["LOG_LEVEL"] = options.log_level
    folder = context.scratch(NAME)
    baselines = [measure_baseline(options.program, options.jobs)]
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    with running_service(context.server_url, folder, settings) as (server, database_url):
        for number in range(1, options.rounds + 1):
            elapsed = time.monotonic() - started
            if number > 1 and elapsed / (number - 1) * number > ROUNDS_BUDGET_SECONDS:
                print(f"  no round {number}: another would end after the {ROUNDS_BUDGET_SECONDS:.0f} s budget")
                break
            shift = (number - 1) % len(clients)
            for client in clients[shift:] + clients[:shift]:
                result = end_to_end.run_round(
                    client, base_url=server.base_url, database_url=database_url, service_pid=server.pid,
                    jobs=options.jobs, connections=options.connections, prefix=f"{PREFIXES[client]}-r{number}",
                    folder=folder,
                )  # fmt: skip
                baselines.append(measure_baseline(options.program, options.jobs))
                around = (baselines[-2]["jobs_per_second"] + baselines[-1]["jobs_per_second"]) / 2
                program_cpu = statistics.median(b["program_cpu_ms_per_run"] for b in baselines)
                figures = _round_figures(result, around, program_cpu)
                rounds.append({"round": number, **figures})
                print(
                    f"  round {number} {client:12}: {figures['jobs_per_second']:5.0f} jobs/s "
                    f"({figures['seconds']:.2f} s; client done after {figures['client_seconds']:.2f} s), baseline "
                    f"{around:.0f}/s, ratio {figures['ratio']:.2f}; ran once each: {result.each_ran_once}; CPU/job "
                    f"service {figures['service_cpu_ms']:.2f} ms, below it {figures['below_service_cpu_ms']:.2f} ms",
                    flush=True,
                )
    return {"rounds": rounds, "baselines": baselines}


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(entry[key] for entry in rounds))


def _client_row(client: str, rounds: list[dict[str, Any]], options: argparse.Namespace) -> Row:
    mine = [entry for entry in rounds if entry["client"] == client]
    once = all(entry["each_ran_once"] for entry in mine)
    ratio = _median(mine, "ratio")
    alive = "" if all(entry["kept_alive"] for entry in mine) else "; connections not kept alive"
    return Row(
        benchmark=f"1 throughput, {client} ({options.jobs} jobs, {options.connections} conns)",
        figure=f"{_median(mine, 'jobs_per_second'):.0f} jobs/s" + ("" if once else ", NOT each run once") + alive,
        baseline=f"subprocess.run loop {_median(mine, 'baseline_jobs_per_second'):.0f}/s",
        ratio=ratio,
        goal=f"ratio >= {GOAL_RATIO}, each once",
        verdict=verdict(ratio >= GOAL_RATIO and once),
    )


def _cpu_rows(rounds: list[dict[str, Any]], baselines: list[dict[str, float]]) -> list[Row]:
    kept = [entry for entry in rounds if entry["kept_alive"]] or rounds
    service = _median(kept, "service_cpu_ms")
    parent = statistics.median(b["parent_cpu_ms_per_run"] for b in baselines)
    program = statistics.median(b["program_cpu_ms_per_run"] for b in baselines)
    label = "1 CPU per job"
    rows = [
        Row(
            f"{label}: the service process",
            f"{service:.2f} ms (user {_median(kept, 'service_user_ms'):.2f}, "
            f"sys {_median(kept, 'service_system_ms'):.2f})",
            f"subprocess.run's parent {parent:.2f} ms",
            None,
            f"<= {GOAL_SERVICE_CPU_MS} ms",
            verdict(service <= GOAL_SERVICE_CPU_MS),
        ),
        Row(
            f"{label}: exit keepers",
            f"{_median(kept, 'keepers_cpu_ms'):.2f} ms",
            f"all below the service {_median(kept, 'below_service_cpu_ms'):.2f}, less the programs",
            None,
            NO_TARGET,
            "-",
        ),
    ]
    if any(entry["helpers"] for entry in kept):
        names = sorted({helper["name"] for entry in kept for helper in entry["helpers"]})
        rows.append(
            Row(f"{label}: fork server ({', '.join(names)})", f"{_median(kept, 'helpers_cpu_ms'):.3f} ms", "", None,
                NO_TARGET, "-")
        )  # fmt: skip
    rows.append(
        Row(
            f"{label}: the programs",
            f"{program:.2f} ms",
            f"as in the loop; recorded: {_median(kept, 'programs_recorded_cpu_ms'):.2f} ms",
            None,
            NO_TARGET,
            "-",
        )
    )
    return rows


def run(context: Context) -> list[Row]:
    options = context.options
    missing = load_tools.ensure_tools([command for command in CLIENT_COMMANDS.values() if command])
    clients = [client for client, command in CLIENT_COMMANDS.items() if command not in missing]
    print(
        f"throughput: {options.rounds} round(s) of {options.jobs} x {options.program} per client "
        f"({', '.join(clients)}), {options.slots} slots, {options.connections} connections; baseline: {options.jobs} x "
        f"subprocess.run([{options.program!r}]) in a row, before the rounds and after each",
        flush=True,
    )
    for tool, reason in missing.items():
        print(f"  {load_tools.not_measured(tool, reason)}", flush=True)
    measured = measure(context, clients)
    rounds, baselines = measured["rounds"], measured["baselines"]
    rows: list[Row] = []
    for client, command in CLIENT_COMMANDS.items():
        if command is not None and command in missing:
            why = load_tools.not_measured(command, missing[command])
            rows.append(Row(f"1 throughput, {client}", "not measured", why, None, f"ratio >= {GOAL_RATIO}", "SKIP"))
        else:
            rows.append(_client_row(client, rounds, options))
    rows.extend(_cpu_rows(rounds, baselines))
    own = [entry for entry in rounds if entry["client"] == "bench client"]
    context.figures["throughput.jobs_per_second"] = _median(own, "jobs_per_second")
    for row in rows:
        print(f"  {row.benchmark}: {row.figure}; {row.baseline}; {row.verdict}")
    write_results(
        NAME,
        {
            "jobs": options.jobs,
            "program": options.program,
            "slots": options.slots,
            "connections": options.connections,
            "rounds": rounds,
            "baselines": baselines,
            "missing_tools": missing,
            "goal_ratio": GOAL_RATIO,
            "goal_service_cpu_ms": GOAL_SERVICE_CPU_MS,
            "rows": [vars(row) for row in rows],
        },
    )
    return rows


def measure_service(context: Context) -> dict[str, Any]:
    """The service's end-to-end throughput with the bench's own client (the peer benchmark, run on its own)."""
    rounds = measure(context, ["bench client"])["rounds"]
    return {"jobs_per_second": _median(rounds, "jobs_per_second"), "rounds": rounds}


if __name__ == "__main__":
    run_standalone(__doc__, run)
