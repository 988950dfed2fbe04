"""End to end: `python -m service` as a separate process runs jobs, reports them, and keeps them across a restart."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.jobs import executions_of, wait_until_final
from tests.support.server import ServerStarter, free_port, service_environment

pytestmark = pytest.mark.e2e

# Records each run as "<JOB_ID> <JOB_ATTEMPT>" in the file named by its first argument, then exits with the code
# given as its second. The sleep makes runs overlap and gives every attempt a measurable duration.
JOB_SCRIPT = '''\
"""A job for the end-to-end tests: record this run, then exit with the code given."""
import os
import sys
import time

with open(sys.argv[1], "a", encoding="utf-8") as executions:
    executions.write(f"{os.environ['JOB_ID']} {os.environ['JOB_ATTEMPT']}\\n")
time.sleep(0.2)
sys.exit(int(sys.argv[2]))
'''
JOB_SLEEP_MS = 200


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    name: str
    exit_code: int

    @property
    def expected_attempts(self) -> int:
        return 1 if self.exit_code == 0 else 2  # MAX_ATTEMPTS defaults to 2: one retry


def submit(client: httpx.Client, name: str, executions: Path, exit_code: int) -> SubmittedJob:
    response = client.post("/jobs", json={"jobName": name, "arguments": [str(executions), str(exit_code)]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert re.fullmatch(r"job-[1-9][0-9]*", body["jobId"]), body
    assert body["status"] in ("queued", "running"), body
    assert body["jobName"] == name
    assert body["args"] == [str(executions), str(exit_code)]
    return SubmittedJob(body["jobId"], name, exit_code)


def history(client: httpx.Client) -> list[tuple[Any, ...]]:
    response = client.get("/jobs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    fields = ("jobId", "jobName", "args", "status", "attempts", "retries", "exitCode", "duration", "finishedAt")
    return [tuple(item[field] for field in fields) for item in response.json()]


def expected_stats(jobs: list[SubmittedJob], attempt_durations: dict[tuple[str, int], int]) -> dict[str, Any]:
    """The /stats answer derived independently from what the jobs did: one fact per finished attempt."""
    facts = [
        {
            "name": job.name,
            "attempt": attempt,
            "succeeded": job.exit_code == 0,
            "duration_ms": attempt_durations[(job.job_id, attempt)],
        }
        for job in jobs
        for attempt in range(1, job.expected_attempts + 1)
    ]
    conditions: dict[str, Callable[[dict[str, Any]], bool]] = {
        "Job name length > 10": lambda fact: len(fact["name"]) > 10,
        "Job name contains digits": lambda fact: re.search(r"[0-9]", fact["name"]) is not None,
        "Argument count >= 2": lambda _fact: True,  # every job here gets two arguments
        "Job execution time > 1 second": lambda fact: fact["duration_ms"] > 1000,
        "Retry attempts": lambda fact: fact["attempt"] > 1,
    }

    def rate(selected: list[dict[str, Any]]) -> float:
        return sum(fact["succeeded"] for fact in selected) / len(selected) if selected else 0.0

    patterns = {}
    for pattern, condition in conditions.items():
        matching = [fact for fact in facts if condition(fact)]
        patterns[pattern] = (len(matching), rate(matching))
    return {"totalJobs": len(jobs), "totalAttempts": len(facts), "overall": rate(facts), "patterns": patterns}


def test_jobs_run_are_reported_and_survive_a_restart(
    database_url: str, start_server: ServerStarter, tmp_path: Path
) -> None:
    script = tmp_path / "record_and_exit.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    executions = tmp_path / "executions.txt"
    log_file = tmp_path / "logs" / "app.log"

    def environment() -> dict[str, str]:
        return service_environment(
            PORT=str(free_port()),
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(log_file),
            JOB_SCRIPT_PATH=str(script),
            MAX_CONCURRENT_JOBS="4",
            RETRY_BACKOFF_BASE_SECONDS="0.1",
        )

    server = start_server(environment())
    first_health = server.wait_until_healthy()
    with server.client() as client:
        # The contract's own example first (task-123); names vary so that the /stats patterns split them.
        jobs = [
            submit(client, "task-123", executions, 0),
            submit(client, "nightly-report-7", executions, 0),
            submit(client, "alpha", executions, 0),
            submit(client, "task-124", executions, 1),
            submit(client, "cleanup-old-files", executions, 1),
        ]
        listed = wait_until_final(client, [job.job_id for job in jobs])

        for job in jobs:
            item = listed[job.job_id]
            if job.exit_code == 0:
                expected = {"status": "completed", "attempts": 1, "retries": 0, "exitCode": 0}
            else:
                expected = {"status": "crashed", "attempts": 2, "retries": 1, "exitCode": 1}
            assert {key: item[key] for key in expected} == expected, item
            assert item["jobName"] == job.name
            assert item["duration"] >= JOB_SLEEP_MS, item
            moments = [datetime.fromisoformat(item[field]) for field in ("createdAt", "startedAt", "finishedAt")]
            assert moments == sorted(moments), item

        response = client.get("/jobs", params={"limit": 1000})
        listed_ids = [int(item["jobId"].removeprefix("job-")) for item in response.json()]
        assert listed_ids == sorted(listed_ids, reverse=True), "GET /jobs is not newest first"

        # Each job ran exactly as often as its attempts say, each attempt once.
        assert executions_of(executions) == Counter(
            (job.job_id, attempt) for job in jobs for attempt in range(1, job.expected_attempts + 1)
        )

        attempt_durations: dict[tuple[str, int], int] = {}
        for job in jobs:
            detail = client.get(f"/jobs/{job.job_id}").json()
            outcomes = [(a["attempt"], a["outcome"], a["exitCode"]) for a in detail["attemptHistory"]]
            expected_outcome = "succeeded" if job.exit_code == 0 else "failed"
            assert outcomes == [
                (attempt, expected_outcome, job.exit_code) for attempt in range(1, job.expected_attempts + 1)
            ], detail
            assert {a["nodeId"] for a in detail["attemptHistory"]} == {first_health["nodeId"]}
            attempt_durations.update({(job.job_id, a["attempt"]): a["duration"] for a in detail["attemptHistory"]})

        stats = client.get("/stats").json()
        expected_numbers = expected_stats(jobs, attempt_durations)
        assert stats["totalJobs"] == expected_numbers["totalJobs"]
        assert stats["totalAttempts"] == expected_numbers["totalAttempts"]
        assert stats["overallSuccessRate"] == pytest.approx(expected_numbers["overall"], abs=1e-4)
        reported = {p["pattern"]: (p["matchCount"], p["successRate"]) for p in stats["patterns"]}
        for pattern, (match_count, success_rate) in expected_numbers["patterns"].items():
            assert pattern in reported, stats
            assert reported[pattern][0] == match_count, (pattern, stats)
            assert reported[pattern][1] == pytest.approx(success_rate, abs=1e-4), (pattern, stats)

        before_restart = history(client)

    assert server.stop() == 0, server.output()

    restarted = start_server(environment())
    second_health = restarted.wait_until_healthy()
    assert second_health["nodeId"] == first_health["nodeId"], "the node id changed across a restart"
    with restarted.client() as client:
        assert history(client) == before_restart
        assert client.get("/stats").json()["totalJobs"] == len(jobs)

        newcomer = submit(client, "after-restart-1", executions, 0)
        assert wait_until_final(client, [newcomer.job_id])[newcomer.job_id]["status"] == "completed"
        assert executions_of(executions)[(newcomer.job_id, 1)] == 1
        assert history(client)[1:] == before_restart
    assert restarted.stop() == 0, restarted.output()

    log_lines = log_file.read_text(encoding="utf-8").splitlines()
    crashed = next(job for job in jobs if job.exit_code != 0)
    for job_id, events in (
        (jobs[0].job_id, ("accepted", "started", "ended", "finished")),
        (crashed.job_id, ("accepted", "started", "ended", "retry scheduled", "finished")),
        (newcomer.job_id, ("accepted", "started", "ended", "finished")),
    ):
        about_job = [line for line in log_lines if job_id in line.replace(":", " ").split()]
        for event in events:
            assert any(event in line for line in about_job), f"no {event!r} line for {job_id} in {log_file}"
