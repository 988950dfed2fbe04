"""Every endpoint through the real app (lifespan, migrations, reconciler, supervisor), every validation error."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.identifiers import format_job_id, parse_job_id
from service.domain.status import FINAL_JOB_STATUSES, JobStatus
from service.settings import Settings
from tests.support.api import Client, count_jobs, wait_for_job

JOB_SCRIPT = '''"""A job for the API tests: argument "fail" exits 1, "sleep" runs for a long time, else exits 0."""
import sys
import time

if sys.argv[1:2] == ["sleep"]:
    time.sleep(60)
sys.exit(1 if sys.argv[1:2] == ["fail"] else 0)
'''
JOB_FIELDS = {
    "jobId",
    "jobName",
    "args",
    "status",
    "retries",
    "exitCode",
    "duration",
    "createdAt",
    "startedAt",
    "finishedAt",
    "attempts",
}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}
PATTERN_NAMES = [
    "Job name length > 10",
    "Job name contains digits",
    "Argument count >= 2",
    "Job execution time > 1 second",
    "Retry attempts",
]
JOB_ID = re.compile(r"job-[1-9][0-9]*")
FINAL_STATUSES = {status.value for status in FINAL_JOB_STATUSES}


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    script = tmp_path / "api_job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    return script.resolve()  # as the settings store it


@pytest.fixture
def app(make_settings: Callable[..., Settings], job_script: Path) -> Litestar:
    # Drain at shutdown: the test's short jobs finish and are recorded, and no process outlives the test.
    return create_app(make_settings(job_script_path=job_script, shutdown_mode="drain"))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as client:
        yield client


async def insert_idle_jobs(engine: AsyncEngine, statuses: list[JobStatus]) -> list[tuple[str, JobStatus]]:
    """Jobs written straight to the table, never due (so the supervisor leaves them be), oldest first."""
    inserted = []
    async with engine.begin() as connection:
        for number, status in enumerate(statuses):
            database_id = (
                await connection.execute(
                    text("""
                        INSERT INTO jobs (name, program, arguments, status, max_attempts, next_attempt_at)
                        VALUES (:name, '/bin/true', '{}', :status, 2, NULL) RETURNING id
                    """),
                    {"name": f"idle-{number}", "status": status.value},
                )
            ).scalar_one()
            inserted.append((format_job_id(database_id), status))
    return inserted


def assert_problem(response: Any, status_code: int, path: str) -> dict[str, Any]:
    """An RFC 9457 problem-details answer; returns its body."""
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_FIELDS
    assert body["status"] == status_code
    assert body["instance"] == path
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# --- POST /jobs ---------------------------------------------------------------------------------------------


async def test_submit_answers_201_with_the_job_and_has_committed_it(
    client: Client, engine: AsyncEngine, job_script: Path
) -> None:
    response = await client.post("/jobs", json={"jobName": "task-123", "arguments": ["input1", "output2"]})

    assert response.status_code == 201, response.text
    # Read at once, through another connection: the row must already be committed.
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT name, program, arguments, max_attempts FROM jobs WHERE id = :id"),
                {"id": parse_job_id(response.json()["jobId"])},
            )
        ).one_or_none()
    job = response.json()
    assert set(job) >= JOB_FIELDS
    assert JOB_ID.fullmatch(job["jobId"])
    assert job["status"] in {"queued", "running"}
    assert job["jobName"] == "task-123"
    assert job["args"] == ["input1", "output2"]
    assert job["retries"] == 0
    assert job["attempts"] == (0 if job["status"] == "queued" else 1)
    assert job["maxAttempts"] == 2
    assert job["program"] == str(job_script)
    assert job["exitCode"] is None
    assert job["duration"] is None
    assert job["finishedAt"] is None
    assert datetime.fromisoformat(job["createdAt"]).tzinfo is not None
    assert row is not None
    assert tuple(row) == ("task-123", str(job_script), ["input1", "output2"], 2)


async def test_arguments_may_be_left_out(client: Client) -> None:
    response = await client.post("/jobs", json={"jobName": "no-arguments"})

    assert response.status_code == 201, response.text
    assert response.json()["args"] == []


async def test_values_at_the_limits_are_accepted_and_stored_exactly(client: Client, engine: AsyncEngine) -> None:
    name = "é" * 199 + "✓"  # 200 characters (more bytes): the limit counts characters
    arguments = ["a" * 4096, "", "line\nbreak", "tab\there", "ünïcødé", *(str(i) for i in range(251))]
    assert len(arguments) == 256

    response = await client.post("/jobs", json={"jobName": name, "arguments": arguments})

    assert response.status_code == 201, response.text
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT name, arguments FROM jobs"))).one()
    assert tuple(stored) == (name, arguments)


async def test_submit_never_waits_for_the_process(make_settings: Callable[..., Settings], job_script: Path) -> None:
    # Killed at shutdown without grace: the sleeping process is ended as soon as the test leaves the client.
    app = create_app(make_settings(job_script_path=job_script, shutdown_mode="kill", shutdown_grace_seconds=0))
    async with AsyncTestClient(app=app) as client:
        started = time.monotonic()
        response = await client.post("/jobs", json={"jobName": "sleeper", "arguments": ["sleep"]})
        elapsed = time.monotonic() - started

        assert response.status_code == 201, response.text
        assert elapsed < 5, "the job sleeps for 60 s; the request must not have waited for it"
        job = await wait_for_job(
            client,
            response.json()["jobId"],
            lambda j: (
                j["status"] == "running" and bool(j["attemptHistory"]) and j["attemptHistory"][0]["pid"] is not None
            ),
        )
        assert job["attemptHistory"][0]["outcome"] == "running"


# One case per rule of the contract; each names the field the error must point at.
INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("jobName missing", {"arguments": ["a"]}, "jobName"),
    ("jobName empty", {"jobName": ""}, "jobName"),
    ("jobName 201 characters", {"jobName": "n" * 201}, "jobName"),
    ("jobName with a newline", {"jobName": "two\nlines"}, "jobName"),
    ("jobName with a tab", {"jobName": "a\tb"}, "jobName"),
    ("jobName with NUL", {"jobName": "a\x00b"}, "jobName"),
    ("jobName with ESC", {"jobName": "red\x1b[31m"}, "jobName"),
    ("jobName with DEL", {"jobName": "a\x7f"}, "jobName"),
    ("jobName a number", {"jobName": 42}, "jobName"),
    ("jobName null", {"jobName": None}, "jobName"),
    ("jobName a list", {"jobName": ["a"]}, "jobName"),
    ("arguments a string", {"jobName": "a", "arguments": "x y"}, "arguments"),
    ("arguments an object", {"jobName": "a", "arguments": {"x": "y"}}, "arguments"),
    ("arguments null", {"jobName": "a", "arguments": None}, "arguments"),
    ("257 arguments", {"jobName": "a", "arguments": ["x"] * 257}, "arguments"),
    ("argument of 4097 characters", {"jobName": "a", "arguments": ["ok", "x" * 4097]}, "arguments[1]"),
    ("argument with NUL", {"jobName": "a", "arguments": ["ok", "ok", "a\x00b"]}, "arguments[2]"),
    ("argument a number", {"jobName": "a", "arguments": [3]}, "arguments[0]"),
    ("argument null", {"jobName": "a", "arguments": ["ok", None]}, "arguments[1]"),
    ("argument a list", {"jobName": "a", "arguments": [["nested"]]}, "arguments[0]"),
    ("unknown field", {"jobName": "a", "colour": "red"}, "colour"),
    ("body a JSON array", [{"jobName": "a"}], "body"),
    ("body a JSON string", "task", "body"),
    ("body JSON null", None, "body"),
]
INVALID_RAW_BODIES: list[tuple[str, bytes, str]] = [
    ("body not JSON", b"jobName=task-1", "body"),
    ("body malformed JSON", b'{"jobName": "a",}', "body"),
    ("body empty", b"", "body"),
]


@pytest.mark.parametrize(
    ("payload", "field"), [(payload, field) for _, payload, field in INVALID_BODIES], ids=[c[0] for c in INVALID_BODIES]
)
async def test_invalid_body_is_refused_naming_the_field_and_stores_nothing(
    client: Client, engine: AsyncEngine, payload: Any, field: str
) -> None:
    response = await client.post(
        "/jobs", content=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )

    body = assert_problem(response, 400, "/jobs")
    assert [error["field"] for error in body["errors"]] == [field]
    assert body["errors"][0]["message"]
    assert await count_jobs(engine) == 0


@pytest.mark.parametrize(
    ("raw", "field"), [(raw, field) for _, raw, field in INVALID_RAW_BODIES], ids=[c[0] for c in INVALID_RAW_BODIES]
)
async def test_body_that_is_not_a_json_object_is_refused_and_stores_nothing(
    client: Client, engine: AsyncEngine, raw: bytes, field: str
) -> None:
    response = await client.post("/jobs", content=raw, headers={"content-type": "application/json"})

    body = assert_problem(response, 400, "/jobs")
    assert [error["field"] for error in body["errors"]] == [field]
    assert await count_jobs(engine) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_declared_as_json_is_refused_and_stores_nothing(
    client: Client, engine: AsyncEngine, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    raw = json.dumps({"jobName": "task-1", "arguments": []}).encode()

    response = await client.post("/jobs", content=raw, headers=headers)

    body = assert_problem(response, 415, "/jobs")
    assert [error["field"] for error in body["errors"]] == ["Content-Type"]
    assert await count_jobs(engine) == 0


async def test_a_json_media_type_with_parameters_is_accepted(client: Client) -> None:
    raw = json.dumps({"jobName": "task-1", "arguments": []}).encode()

    response = await client.post("/jobs", content=raw, headers={"content-type": "application/json; charset=utf-8"})

    assert response.status_code == 201, response.text


# --- GET /jobs ----------------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_the_contract_fields(client: Client) -> None:
    submitted = []
    for name in ("first", "second", "third"):
        response = await client.post("/jobs", json={"jobName": name, "arguments": [name]})
        assert response.status_code == 201, response.text
        submitted.append(response.json()["jobId"])

    response = await client.get("/jobs")

    assert response.status_code == 200
    jobs = response.json()
    assert [job["jobId"] for job in jobs] == submitted[::-1]
    assert [job["jobName"] for job in jobs] == ["third", "second", "first"]
    assert all(set(job) >= JOB_FIELDS for job in jobs)


async def test_status_filter_single_repeated_and_comma_separated(client: Client, engine: AsyncEngine) -> None:
    inserted = await insert_idle_jobs(
        engine,
        [
            JobStatus.COMPLETED,
            JobStatus.CRASHED,
            JobStatus.COMPLETED,
            JobStatus.QUEUED,
            JobStatus.CANCELLED,
            JobStatus.RETRIED,
            JobStatus.CRASHED,
        ],
    )

    def expected(*statuses: JobStatus) -> list[str]:
        return [job_id for job_id, status in reversed(inserted) if not statuses or status in statuses]

    async def listed(query: str) -> list[str]:
        response = await client.get(f"/jobs{query}")
        assert response.status_code == 200, response.text
        return [job["jobId"] for job in response.json()]

    assert await listed("") == expected()
    assert await listed("?status=completed") == expected(JobStatus.COMPLETED)
    assert await listed("?status=crashed") == expected(JobStatus.CRASHED)
    both = expected(JobStatus.COMPLETED, JobStatus.CRASHED)
    assert await listed("?status=completed&status=crashed") == both
    assert await listed("?status=completed,crashed") == both
    assert await listed("?status=completed,%20crashed") == both
    assert await listed("?status=cancelled,queued&status=retried") == expected(
        JobStatus.CANCELLED, JobStatus.QUEUED, JobStatus.RETRIED
    )
    assert await listed("?status=running") == []
    # Every item says the status it was selected by.
    response = await client.get("/jobs?status=completed")
    assert {job["status"] for job in response.json()} == {"completed"}


@pytest.mark.parametrize(
    "query", ["?status=finished", "?status=completed,bogus", "?status=completed&status=", "?status=COMPLETED"]
)
async def test_unknown_status_is_refused(client: Client, query: str) -> None:
    response = await client.get(f"/jobs{query}")

    body = assert_problem(response, 400, "/jobs")
    assert [error["field"] for error in body["errors"]] == ["status"]


async def test_limit_defaults_to_100_and_allows_up_to_1000(client: Client, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("""
                INSERT INTO jobs (name, program, status, max_attempts, next_attempt_at)
                SELECT 'bulk-' || n, '/bin/true', 'completed', 2, NULL FROM generate_series(1, 1001) AS n
            """)
        )
        newest_first = [
            format_job_id(database_id)
            for database_id in (await connection.execute(text("SELECT id FROM jobs ORDER BY id DESC"))).scalars()
        ]

    async def listed(query: str) -> list[str]:
        response = await client.get(f"/jobs{query}")
        assert response.status_code == 200, response.text
        return [job["jobId"] for job in response.json()]

    assert await listed("") == newest_first[:100]
    assert await listed("?limit=1") == newest_first[:1]
    assert await listed("?limit=250") == newest_first[:250]
    assert await listed("?limit=1000") == newest_first[:1000]
    assert await listed("?limit=3&status=completed") == newest_first[:3]


@pytest.mark.parametrize("value", ["0", "1001", "-1", "abc", "1.5"])
async def test_limit_out_of_range_is_refused(client: Client, value: str) -> None:
    response = await client.get(f"/jobs?limit={value}")

    body = assert_problem(response, 400, "/jobs")
    assert [error["field"] for error in body["errors"]] == ["limit"]


# --- GET /jobs/{jobId} --------------------------------------------------------------------------------------


async def test_unknown_or_malformed_job_id_is_404(client: Client) -> None:
    submitted = await client.post("/jobs", json={"jobName": "exists"})
    existing = parse_job_id(submitted.json()["jobId"])
    assert existing is not None
    for job_id in [
        format_job_id(existing + 1000),
        "abc",
        "job-0",
        f"job-0{existing}",  # leading zero: not another spelling of an existing job
        str(existing),
        "job-99999999999999999999",
        "job--1",
    ]:
        response = await client.get(f"/jobs/{job_id}")
        body = assert_problem(response, 404, f"/jobs/{job_id}")
        assert job_id in body["detail"]


async def test_a_job_runs_to_completion(client: Client) -> None:
    submitted = await client.post("/jobs", json={"jobName": "runs-fine", "arguments": ["ok"]})
    job_id = submitted.json()["jobId"]

    job = await wait_for_job(client, job_id, lambda j: j["status"] in FINAL_STATUSES)

    assert job["status"] == "completed"
    assert (job["attempts"], job["retries"], job["exitCode"]) == (1, 0, 0)
    assert isinstance(job["duration"], int)
    assert job["startedAt"] is not None
    assert job["finishedAt"] is not None
    [attempt] = job["attemptHistory"]
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "succeeded"
    assert (attempt["exitCode"], attempt["signal"], attempt["error"]) == (0, None, None)
    assert isinstance(attempt["pid"], int)
    assert attempt["nodeId"] == "test-node"
    assert attempt["duration"] == job["duration"]
    assert attempt["finishedAt"] is not None
    # The list says the same as the detail.
    [listed] = (await client.get("/jobs")).json()
    assert {key: listed[key] for key in JOB_FIELDS} == {key: job[key] for key in JOB_FIELDS}


async def test_a_failing_job_is_retried_once_then_crashed(client: Client, engine: AsyncEngine) -> None:
    submitted = await client.post("/jobs", json={"jobName": "always-fails", "arguments": ["fail"]})
    job_id = submitted.json()["jobId"]

    job = await wait_for_job(client, job_id, lambda j: j["status"] in FINAL_STATUSES)

    assert job["status"] == "crashed"
    assert (job["attempts"], job["retries"], job["exitCode"]) == (2, 1, 1)
    assert [(a["attempt"], a["outcome"], a["exitCode"]) for a in job["attemptHistory"]] == [
        (1, "failed", 1),
        (2, "failed", 1),
    ]
    async with engine.connect() as connection:
        attempts = (
            await connection.execute(
                text("SELECT count(*) FROM attempts WHERE job_id = :id"), {"id": parse_job_id(job_id)}
            )
        ).scalar_one()
    assert attempts == 2


# --- GET /stats, GET /health --------------------------------------------------------------------------------


async def test_stats_has_the_contract_shape(client: Client) -> None:
    response = await client.get("/stats")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    stats = response.json()
    assert set(stats) >= {"totalJobs", "overallSuccessRate", "patterns"}
    assert isinstance(stats["totalJobs"], int)
    assert isinstance(stats["overallSuccessRate"], int | float)
    # /stats has more patterns than the contract, ordered by evidence, with more fields: the contract's stay.
    assert set(PATTERN_NAMES) <= {pattern["pattern"] for pattern in stats["patterns"]}
    for pattern in stats["patterns"]:
        assert set(pattern) >= {"pattern", "matchCount", "successRate", "differenceFromAverage"}
        assert isinstance(pattern["matchCount"], int)
        assert re.fullmatch(r"0%|[+-][1-9][0-9]*%", pattern["differenceFromAverage"])


async def test_stats_count_submitted_jobs(client: Client) -> None:
    for name in ("one", "two"):
        assert (await client.post("/jobs", json={"jobName": name})).status_code == 201

    assert (await client.get("/stats")).json()["totalJobs"] == 2


async def test_health_reports_the_node_and_its_database(client: Client) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["database"] == "ok"
    assert health["nodeId"] == "test-node"
    assert health["runningJobs"] == 0


async def test_ready_reports_the_node_ready_with_its_lease_held(client: Client) -> None:
    response = await client.get("/ready")

    assert response.status_code == 200, response.text
    ready = response.json()
    assert ready == {
        "status": "ready",
        "nodeId": "test-node",
        "database": "ok",
        "claimLoop": "running",
        "lease": "held",
        "reason": None,
    }
