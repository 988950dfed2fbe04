"""What the exit keeper costs per job: start-to-exit time of a no-op program, and the keeper's memory.

    python -m bench.keeper_cost [--runs 500]

Runs `/bin/true` through the service's own runner (start, go-ahead, wait, read the exit status) with no keeper
(the baseline, measured in the same run), with the compiled keeper spawned per job, with the compiled keeper forked
by the fork server, and with the Python keeper. Prints the time
per job and the ratio to the baseline, and the resident memory of each keeper while its program sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import write_results
from service.runner.keeper import KeeperKind, keeper_command
from service.runner.launcher import ProcessLauncher, ProcessSpec, RunningProcess
from service.settings import Settings

NO_OP_PROGRAM = "/bin/true"
SLEEP_PROGRAM = "/bin/sleep"


def spec(folder: Path, number: int, argv: list[str]) -> ProcessSpec:
    return ProcessSpec(
        argv=argv,
        environment={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout_path=folder / f"{number}.stdout",
        stderr_path=folder / f"{number}.stderr",
        status_path=folder / f"{number}.exit-status.json",
        # The service's defaults: output copied through the keeper with a 10 MB cap and a 64 KiB tail.
        output_limit_bytes=Settings.model_fields["output_limit_bytes"].default,
        output_tail_bytes=Settings.model_fields["output_tail_bytes"].default,
    )


async def start(launcher: ProcessLauncher, process_spec: ProcessSpec) -> RunningProcess:
    [process] = await launcher.start_many([process_spec])
    if not isinstance(process, RunningProcess):
        raise process
    return process


async def time_runs(launcher: ProcessLauncher, folder: Path, runs: int) -> list[float]:
    durations = []
    for number in range(runs):
        started = time.perf_counter()
        process = await start(launcher, spec(folder, number, [NO_OP_PROGRAM]))
        process.release()
        process_exit = await process.wait()
        durations.append(time.perf_counter() - started)
        assert process_exit.exit_code == 0, process_exit
    return durations


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def keeper_memory(launcher: ProcessLauncher, folder: Path) -> int:
    process = await start(launcher, spec(folder, 0, [SLEEP_PROGRAM, "1"]))
    process.release()
    await asyncio.sleep(0.3)  # past the keeper's start-up and its fork
    rss = resident_kb(process.pid)
    await process.wait()
    return rss


async def measure(runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="jobmanager-keeper-") as temporary:
        folder = Path(temporary)
        kinds = {"none": KeeperKind.NONE, "native": KeeperKind.NATIVE, "python": KeeperKind.PYTHON}
        launchers = {name: ProcessLauncher(keeper_command(kind, folder / "bin")) for name, kind in kinds.items()}
        launchers["served"] = ProcessLauncher(keeper_command(KeeperKind.NATIVE, folder / "bin"), fork_server=True)
        for name, launcher in launchers.items():
            await time_runs(launcher, folder, 20)  # warm caches before measuring
            durations = await time_runs(launcher, folder / name, runs)
            results[name] = {
                "median_ms": statistics.median(durations) * 1000,
                "p95_ms": statistics.quantiles(durations, n=20)[18] * 1000,
                "keeper_rss_kb": await keeper_memory(launcher, folder) if name != "none" else 0,
            }
            await launcher.close()
    baseline = results["none"]["median_ms"]
    for figures in results.values():
        figures["ratio_to_baseline"] = figures["median_ms"] / baseline
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    arguments = parser.parse_args()
    results = asyncio.run(measure(arguments.runs))
    print(f"{'keeper':8} {'median ms':>10} {'p95 ms':>8} {'x baseline':>11} {'keeper RSS':>11}")
    for name, figures in results.items():
        print(
            f"{name:8} {figures['median_ms']:10.2f} {figures['p95_ms']:8.2f} "
            f"{figures['ratio_to_baseline']:11.2f} {figures['keeper_rss_kb']:>8} kB"
        )
    print(f"results: {write_results('keeper_cost', {'runs': arguments.runs, **results})}")


if __name__ == "__main__":
    main()
