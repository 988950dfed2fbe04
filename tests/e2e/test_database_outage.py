"""End to end: a real server while its PostgreSQL is stopped, then frozen (SIGSTOP), then back.

Meanwhile every request that needs the database answers 503 with Retry-After, within the configured timeouts (never
a 500, never a hang), /ready says 503 and /health 200 `degraded`; the jobs keep running, and once the database is
back every job's outcome is recorded, each program having run exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.clusters import Cluster
from tests.support.jobs import executions_of, wait_until_final
from tests.support.server import ServerProcess, ServerStarter, free_port, service_environment, wait_until

pytestmark = pytest.mark.e2e

JOB_SCRIPT = """\
#!/bin/sh
# Record this run in the file $1, then sleep $2 seconds: long enough to end while the database is away.
echo "$JOB_ID $JOB_ATTEMPT" >> "$1"
sleep "$2"
"""
CONNECT_TIMEOUT_SECONDS = 2.0
STATEMENT_TIMEOUT_SECONDS = 2.0
# Connect, or a statement and its client backstop, then closing the dead connection: what a request may take at
# worst while the database is away, with room for a loaded machine.
REQUEST_BOUND_SECONDS = CONNECT_TIMEOUT_SECONDS + STATEMENT_TIMEOUT_SECONDS + 10.0
JOBS = 4
JOB_SECONDS = 4
RECOVERY_SECONDS = 60.0


def _timed(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < REQUEST_BOUND_SECONDS, f"{method} {path} took {elapsed:.1f} s"
    return response


def _outage_job(executions: Path, phase: str) -> dict[str, object]:
    return {"jobName": f"during-{phase}", "arguments": [str(executions), "0"]}


def _assert_unavailable(client: httpx.Client, executions: Path, phase: str) -> None:
    """What a client sees while the database is away. The submission carries an Idempotency-Key: a 503 from a hung
    server cannot say whether the insert it sent will commit once the server resumes, so the client repeats it."""
    submitted = _timed(client, "POST", "/jobs", json=_outage_job(executions, phase), headers={"Idempotency-Key": phase})
    listed = _timed(client, "GET", "/jobs")
    for response in (submitted, listed):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["status"] == 503
    ready = _timed(client, "GET", "/ready")
    assert ready.status_code == 503, ready.text
    assert ready.json()["database"] == "unreachable"
    health = _timed(client, "GET", "/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "degraded"
    assert health.json()["reason"]


def _wait_until_ready(client: httpx.Client, server: ServerProcess) -> None:
    def ready() -> bool | None:
        try:
            return client.get("/ready").status_code == 200 or None
        except httpx.TransportError:
            return None

    wait_until(ready, timeout=RECOVERY_SECONDS, message=lambda: f"GET /ready is 200 again\n{server.output()}")


def test_requests_answer_503_while_the_database_is_down_or_hung_and_everything_recovers(
    private_cluster: Cluster, start_server: ServerStarter, tmp_path: Path
) -> None:
    script = tmp_path / "job.sh"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    script.chmod(0o755)
    executions = tmp_path / "executions.txt"
    server = start_server(
        service_environment(
            PORT=str(free_port()),
            DATABASE_URL=private_cluster.url,
            DATA_DIR=str(tmp_path / "data"),
            LOG_FILE=str(tmp_path / "logs" / "app.log"),
            JOB_SCRIPT_PATH=str(script),
            MAX_ATTEMPTS="1",
            POLL_INTERVAL_SECONDS="0.2",
            DATABASE_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT_SECONDS),
            DATABASE_STATEMENT_TIMEOUT_SECONDS=str(STATEMENT_TIMEOUT_SECONDS),
            OUTCOME_SWEEP_INTERVAL_SECONDS="2",
        )
    )
    server.wait_until_healthy()
    job_ids: list[str] = []
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_BOUND_SECONDS * 2) as client:
        assert client.get("/ready").status_code == 200

        def submit_batch() -> None:
            for index in range(JOBS):
                response = client.post(
                    "/jobs", json={"jobName": f"outage-{index}", "arguments": [str(executions), str(JOB_SECONDS)]}
                )
                assert response.status_code == 201, response.text
                job_ids.append(response.json()["jobId"])
            wanted = Counter((job_id, 1) for job_id in job_ids)
            wait_until(
                lambda: (executions_of(executions) & wanted) == wanted or None,
                timeout=RECOVERY_SECONDS,
                message=lambda: f"every job started\n{server.output()}",
            )

        submit_batch()

        def resubmit(phase: str) -> None:
            """The client's repeat of the submission that got a 503: accepted now, or found accepted already."""
            response = client.post("/jobs", json=_outage_job(executions, phase), headers={"Idempotency-Key": phase})
            assert response.status_code in (200, 201), response.text
            job_ids.append(response.json()["jobId"])

        private_cluster.stop()  # the jobs end while it is down
        _assert_unavailable(client, executions, "stop")
        private_cluster.start()
        _wait_until_ready(client, server)
        resubmit("stop")

        submit_batch()
        private_cluster.freeze()  # a hung server: connections open, nothing answers
        try:
            _assert_unavailable(client, executions, "freeze")
        finally:
            private_cluster.thaw()
        _wait_until_ready(client, server)
        resubmit("freeze")

        final = wait_until_final(client, job_ids, timeout=RECOVERY_SECONDS)
        details = [client.get(f"/jobs/{job_id}").json() for job_id in job_ids]

    assert {job_id: job["status"] for job_id, job in final.items()} == dict.fromkeys(job_ids, "completed")
    assert all(len(detail["attemptHistory"]) == 1 for detail in details), details
    assert executions_of(executions) == Counter((job_id, 1) for job_id in job_ids)  # each ran once, none more
    output = server.output()
    assert "unhandled error" not in output, output
    assert "background task" not in output, output
    assert "claim loop died" not in output, output
