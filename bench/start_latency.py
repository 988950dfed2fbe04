"""Start latency: POST /jobs -> the program is running, with free slots, against a direct posix_spawn of it.

    python -m bench.start_latency [--latency-samples 200]

The program is `/bin/date +%s%N`: it writes its own start time (CLOCK_REALTIME, ns) to the attempt's stdout file
(DATA_DIR/output/job-<id>/attempt-1/stdout), which the bench reads as soon as it appears. The latency is that
time minus the wall clock just before the POST was sent, so it covers the request, the insert, the claim, the
spawn under the exit keeper, the pid's commit and the go-ahead. Jobs are submitted one at a time, each after the
previous one has written its line, to a service with 10 slots: a slot is always free. The baseline, in the same
run: the bench process posix_spawns the same `/bin/date +%s%N` into a file and reads it the same way, as many
times before the service runs and again after it, pooled.
Goal: p50 <= 10 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    Context,
    Row,
    conclude,
    job_number,
    latency_summary_ms,
    run_standalone,
    running_service,
    verdict,
)

NAME = "start_latency"
GOAL_P50_MS = 10.0
GOAL_P99_MS = 50.0
PROGRAM = "/bin/date"
ARGUMENTS = ["+%s%N"]
WARM_UP_SAMPLES = 10
OUTPUT_TIMEOUT_SECONDS = 30.0
OUTPUT_POLL_SECONDS = 0.0005
# Between samples, so that the previous job's outcome write is not what the next one measures.
PAUSE_BETWEEN_SAMPLES_SECONDS = 0.02


def read_timestamp_ns(path: Path, timeout: float = OUTPUT_TIMEOUT_SECONDS) -> int:
    """Wait until the program has written its whole line, and return the nanoseconds in it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            text = ""
        if text.endswith("\n"):
            return int(text)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no complete timestamp after {timeout:.0f} s")
        time.sleep(OUTPUT_POLL_SECONDS)


def service_latencies(client: httpx.Client, output_dir: Path, samples: int) -> tuple[list[float], list[float]]:
    """(submit -> running, POST response time), in seconds, for `samples` jobs after a few unmeasured ones."""
    starts: list[float] = []
    responses: list[float] = []
    for index in range(WARM_UP_SAMPLES + samples):
        sent_ns = time.time_ns()
        sent = time.perf_counter()
        response = client.post("/jobs", json={"jobName": f"latency-{index}", "arguments": ARGUMENTS})
        answered = time.perf_counter() - sent
        response.raise_for_status()
        number = job_number(response.json()["jobId"])
        started_ns = read_timestamp_ns(output_dir / f"job-{number}" / "attempt-1" / "stdout")
        if index >= WARM_UP_SAMPLES:
            starts.append((started_ns - sent_ns) / 1e9)
            responses.append(answered)
        time.sleep(PAUSE_BETWEEN_SAMPLES_SECONDS)
    return starts, responses


def spawn_latencies(folder: Path, samples: int) -> list[float]:
    """The baseline: the bench process itself posix_spawns the program, its stdout in a file."""
    folder.mkdir(parents=True)
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    latencies = []
    for index in range(WARM_UP_SAMPLES + samples):
        path = folder / f"{index}.stdout"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            sent_ns = time.time_ns()
            pid = os.posix_spawn(
                PROGRAM, [PROGRAM, *ARGUMENTS], environment, file_actions=[(os.POSIX_SPAWN_DUP2, descriptor, 1)]
            )
        finally:
            os.close(descriptor)
        started_ns = read_timestamp_ns(path)
        os.waitpid(pid, 0)
        if index >= WARM_UP_SAMPLES:
            latencies.append((started_ns - sent_ns) / 1e9)
        time.sleep(PAUSE_BETWEEN_SAMPLES_SECONDS)
    return latencies


def run(context: Context) -> list[Row]:
    options = context.options
    samples = options.latency_samples
    print(
        f"start latency: {samples} x POST /jobs of {PROGRAM} {' '.join(ARGUMENTS)}, one at a time, 10 slots", flush=True
    )
    settings = {"JOB_SCRIPT_PATH": PROGRAM, "MAX_CONCURRENT_JOBS": "10", "LOG_LEVEL": options.log_level}
    folder = context.scratch(NAME)
    # The baseline is taken before and after the service, and pooled: the shared machine's load can change meanwhile.
    spawned = spawn_latencies(folder / "baseline-before", samples)
    with (
        running_service(context.server_url, folder, settings) as (server, _),
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        starts, responses = service_latencies(client, server.data_dir / "output", samples)
    spawned += spawn_latencies(folder / "baseline-after", samples)
    figure: dict[str, Any] = latency_summary_ms(starts)
    answered = latency_summary_ms(responses)
    print(
        f"  service: p50 {figure['p50_ms']:.2f} ms, p99 {figure['p99_ms']:.2f} ms, max {figure['max_ms']:.2f} ms "
        f"(of which the POST's own response: p50 {answered['p50_ms']:.2f} ms)"
    )
    baseline = latency_summary_ms(spawned)
    print(
        f"  baseline, {samples} x posix_spawn of the same program from the bench process before the service and "
        f"{samples} after: p50 {baseline['p50_ms']:.2f} ms, p99 {baseline['p99_ms']:.2f} ms"
    )
    ratio = figure["p50_ms"] / baseline["p50_ms"]
    met = figure["p50_ms"] <= GOAL_P50_MS and figure["p99_ms"] <= GOAL_P99_MS
    row = Row(
        benchmark="4 start latency (submit -> running)",
        figure=f"p50 {figure['p50_ms']:.1f} ms, p99 {figure['p99_ms']:.1f} ms",
        baseline=f"posix_spawn p50 {baseline['p50_ms']:.2f} ms, p99 {baseline['p99_ms']:.2f} ms",
        ratio=ratio,
        goal=f"p50 <= {GOAL_P50_MS:.0f} ms, p99 <= {GOAL_P99_MS:.0f} ms",
        verdict=verdict(met),
    )
    print(f"  ratio of the medians {ratio:.1f}: {row.verdict}")
    return conclude(
        NAME,
        row,
        {
            "samples": samples,
            "program": [PROGRAM, *ARGUMENTS],
            "service_submit_to_running": figure,
            "service_post_response": answered,
            "baseline_posix_spawn": baseline,
            "ratio_of_medians": ratio,
            "goal": {"p50_ms": GOAL_P50_MS, "p99_ms": GOAL_P99_MS},
        },
    )


if __name__ == "__main__":
    run_standalone(__doc__, run)
