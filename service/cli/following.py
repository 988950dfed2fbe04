"""Waiting for a job and following its output live, shared by `submit --wait/--follow` and `logs --follow`; and the
exit status a finished job gives the command that waited for it."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.status import Status

from service.cli import render
from service.cli.client import ApiClient, end_of

WAIT_POLL_SECONDS = 0.5
FINAL_STATUSES = frozenset({"completed", "crashed", "cancelled"})

# The exit status of `submit --wait` for each way a job can end, where the program's own code does not say it.
EXIT_TIMED_OUT = 124  # as timeout(1) reports a command it ended
EXIT_CANCELLED = 125  # a user cancelled the job
EXIT_OUTCOME_UNKNOWN = 126  # the service lost track of the program (outcome `lost`)
EXIT_SPAWN_FAILED = 127  # as a shell reports a command it could not start
EXIT_SIGNAL_BASE = 128  # + the signal's number, as a shell reports a command killed by a signal
EXIT_NO_ATTEMPT = 1


# Outcomes whose exit status is not the program's own code.
_OUTCOME_EXITS = {"timed_out": EXIT_TIMED_OUT, "spawn_failed": EXIT_SPAWN_FAILED, "lost": EXIT_OUTCOME_UNKNOWN}


def exit_status_of(job: dict[str, Any]) -> int:
    """0 for a completed job; the last attempt's exit code for one that failed; 128 + N for a signal N; 124 timed
    out, 125 cancelled, 126 lost, 127 could not start."""
    history = job.get("attemptHistory") or []
    if job["status"] == "completed":
        return 0
    if job["status"] == "cancelled":
        return EXIT_CANCELLED
    last = history[-1] if history else {"outcome": None, "signal": None, "exitCode": None}
    if last["outcome"] in _OUTCOME_EXITS:
        return _OUTCOME_EXITS[last["outcome"]]
    if last["signal"] is not None:
        return EXIT_SIGNAL_BASE + int(last["signal"])
    return EXIT_NO_ATTEMPT if last["exitCode"] is None else int(last["exitCode"])


def ending_line(job: dict[str, Any]) -> str:
    """`job-5 completed`, `job-5 crashed: attempt 2 failed with exit code 3`, ..."""
    history = job.get("attemptHistory") or []
    if job["status"] == "completed" or not history:
        return f"{job['jobId']} {job['status']}"
    last = history[-1]
    if last["signal"] is not None:
        how = f"{last['outcome']} by signal {last['signal']}"
    elif last["exitCode"] is not None:
        how = f"{last['outcome']} with exit code {last['exitCode']}"
    else:
        how = last["outcome"]
    detail = f" ({last['error']})" if last.get("error") else ""
    return f"{job['jobId']} {job['status']}: attempt {last['attempt']} {how}{detail}"


def _progress(job: dict[str, Any]) -> str:
    return f"{job['jobId']} {job['status']} (attempt {job['attempts']} of {job['maxAttempts']})"


def wait_for(
    api: ApiClient, job_id: str, *, until_attempt: int | None = None, status: Status | None = None
) -> dict[str, Any]:
    """Poll the job until it is final, or (with `until_attempt`) until that attempt has begun."""
    while True:
        job: dict[str, Any] = api.get_json(f"/jobs/{job_id}")
        if status is not None:
            status.update(_progress(job))
        if job["status"] in FINAL_STATUSES:
            return job
        if until_attempt is not None and job["attempts"] >= until_attempt:
            return job
        time.sleep(WAIT_POLL_SECONDS)


def stream_attempt(api: ApiClient, job_id: str, attempt: int, stream: str) -> dict[str, Any] | None:
    """Copy one attempt's output to stdout as it is written; its `end` event (outcome, exitCode, signal)."""
    path = f"/jobs/{job_id}/attempts/{attempt}/output"
    for event in api.follow(path, stream=stream, follow="true"):
        if event.event == "output":
            sys.stdout.write(event.data)
            sys.stdout.flush()
        elif event.event == "end":
            return end_of(event)
    return None


def follow_job(api: ApiClient, job_id: str, stream: str = "stdout") -> dict[str, Any]:
    """Stream every attempt's output, one after the other, until the job is final; the final job."""
    attempt = 1
    while True:
        with render.stderr.status(f"{job_id} waiting for attempt {attempt}") as status:
            job = wait_for(api, job_id, until_attempt=attempt, status=status)
        if job["attempts"] < attempt:
            return job  # final, and no further attempt comes
        stream_attempt(api, job_id, attempt, stream)
        attempt += 1


def wait_quietly(api: ApiClient, job_id: str) -> dict[str, Any]:
    """Wait for the job to be final with a spinner on stderr saying where it stands."""
    with render.stderr.status(f"{job_id} waiting") as status:
        return wait_for(api, job_id, status=status)
