"""Job control through the real app: submit options, idempotency, allowed programs, cancel and retry endpoints,
paging and filters on GET /jobs, the attempts and output endpoints."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.domain.identifiers import format_job_id, parse_job_id
from service.settings import Settings
from tests.support.api import Client, count_jobs, wait_for_job
from tests.support.keeper import with_prebuilt_keeper

JOB_SCRIPT = '''"""Argument "fail" exits 1, "sleep" sleeps, "talk" prints on both streams; anything else exits 0."""
import sys
import time

if sys.argv[1:2] == ["sleep"]:
    time.sleep(60)
if sys.argv[1:2] == ["talk"]:
    print("hello from stdout")
    print("hello from stderr", file=sys.stderr)
sys.exit(1 if sys.argv[1:2] == ["fail"] else 0)
'''
OTHER_PROGRAM = """import sys
print("the other program", sys.argv[1:])
"""
FLOOD_LINES = 2000
FLOOD_LINE_BYTES = len("line 00000\n")
FLOOD_PROGRAM = f"""for number in range({FLOOD_LINES}):
    print(f"line {{number:05d}}")
"""
OUTPUT_LIMIT_BYTES = 4096
OUTPUT_TAIL_BYTES = 100
FINAL = {"completed", "crashed", "cancelled"}
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')
FAR_FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    script = tmp_path / "api_job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    return script.resolve()


@pytest.fixture
def other_program(tmp_path: Path) -> Path:
    script = tmp_path / "other.py"
    script.write_text(OTHER_PROGRAM, encoding="utf-8")
    return script.resolve()


@pytest.fixture
def app(
    make_settings: Callable[..., Settings],
    job_script: Path,
    other_program: Path,
    tmp_path: Path,
    keeper_build_dir: Path,
) -> Litestar:
    flood = tmp_path / "flood.py"
    flood.write_text(FLOOD_PROGRAM, encoding="utf-8")
    settings = make_settings(
        job_script_path=job_script,
        allowed_programs={"other": other_program, "flood": flood},
        shutdown_mode="kill",
        shutdown_grace_seconds=1,
        cancel_grace_seconds=1,
        output_limit_bytes=OUTPUT_LIMIT_BYTES,
        output_tail_bytes=OUTPUT_TAIL_BYTES,
    )
    return create_app(with_prebuilt_keeper(settings, keeper_build_dir))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as client:
        yield client


async def submit(client: Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.post("/jobs", json=body, headers=headers or {})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def assert_problem(response: Any, status_code: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if field is not None:
        assert [error["field"] for error in body["errors"]] == [field], body
    return body


# --- POST /jobs: the new fields -----------------------------------------------------------------------------------


async def test_every_option_is_stored_and_shown(client: Client, engine: AsyncEngine, other_program: Path) -> None:
    job = await submit(
        client,
        {
            "jobName": "report",
            "arguments": ["--full"],
            "program": "other",
            "priority": 7,
            "runAt": FAR_FUTURE,
            "timeoutSeconds": 90.5,
            "maxAttempts": 5,
        },
    )

    assert (job["programName"], job["program"]) == ("other", str(other_program))
    assert (job["priority"], job["timeoutSeconds"], job["maxAttempts"]) == (7, 90.5, 5)
    assert datetime.fromisoformat(job["runAt"]) == datetime(2099, 1, 1, tzinfo=UTC)
    assert (job["status"], job["cancelRequestedAt"]) == ("queued", None)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT program_name, program, priority, timeout_seconds, max_attempts, next_attempt_at FROM jobs")
            )
        ).one()
    assert tuple(row[:5]) == ("other", str(other_program), 7, 90.5, 5)
    assert row.next_attempt_at == datetime(2099, 1, 1, tzinfo=UTC)


async def test_the_defaults_come_from_the_settings(
    make_settings: Callable[..., Settings], job_script: Path, keeper_build_dir: Path
) -> None:
    settings = make_settings(job_script_path=job_script, default_timeout_seconds=42, max_attempts=3)
    app = create_app(with_prebuilt_keeper(settings, keeper_build_dir))
    async with AsyncTestClient(app=app) as client:
        job = await submit(client, {"jobName": "defaults", "runAt": FAR_FUTURE})

    assert (job["programName"], job["program"]) == ("default", str(job_script))
    assert (job["priority"], job["timeoutSeconds"], job["maxAttempts"]) == (0, 42.0, 3)


async def test_a_job_runs_the_named_program(client: Client) -> None:
    job = await submit(client, {"jobName": "named", "program": "other", "arguments": ["a b"]})

    finished = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    output = await client.get(f"/jobs/{job['jobId']}/attempts/1/output")

    assert finished["status"] == "completed"
    assert output.text == "the other program ['a b']\n"


async def test_an_unknown_program_is_a_422_naming_the_field_and_stores_nothing(
    client: Client, engine: AsyncEngine
) -> None:
    response = await client.post("/jobs", json={"jobName": "x", "program": "rm"})

    body = assert_problem(response, 422, "program")
    assert "'rm'" in body["detail"]
    assert "default" in body["detail"]
    assert "other" in body["detail"]
    assert await count_jobs(engine) == 0


INVALID_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("a path as program", {"program": "/bin/sh"}, "program"),
    ("program with a space", {"program": "two words"}, "program"),
    ("priority above 1000", {"priority": 1001}, "priority"),
    ("priority below -1000", {"priority": -1001}, "priority"),
    ("priority not an integer", {"priority": 1.5}, "priority"),
    ("runAt without an offset", {"runAt": "2030-01-01T00:00:00"}, "runAt"),
    ("runAt not a time", {"runAt": "tomorrow"}, "runAt"),
    ("timeoutSeconds zero", {"timeoutSeconds": 0}, "timeoutSeconds"),
    ("timeoutSeconds negative", {"timeoutSeconds": -5}, "timeoutSeconds"),
    ("timeoutSeconds over 30 days", {"timeoutSeconds": 30 * 86400 + 1}, "timeoutSeconds"),
    ("maxAttempts zero", {"maxAttempts": 0}, "maxAttempts"),
    ("maxAttempts 21", {"maxAttempts": 21}, "maxAttempts"),
]


async def test_an_invalid_option_is_refused_naming_it(client: Client, engine: AsyncEngine) -> None:
    for case, extra, field in INVALID_OPTIONS:
        response = await client.post("/jobs", json={"jobName": "x", **extra})

        assert response.status_code == 400, (case, response.text)
        assert [error["field"] for error in response.json()["errors"]] == [field], case
    assert await count_jobs(engine) == 0


# --- Idempotency-Key --------------------------------------------------------------------------------------------


async def test_the_same_key_and_body_give_the_same_job_with_200(client: Client, engine: AsyncEngine) -> None:
    body = {"jobName": "once", "arguments": ["a"], "runAt": FAR_FUTURE}
    first = await client.post("/jobs", json=body, headers={"Idempotency-Key": "key-1"})
    # The same body written differently (field order, an explicit default) is the same request.
    again = await client.post(
        "/jobs",
        json={"runAt": FAR_FUTURE, "priority": 0, "program": "default", "arguments": ["a"], "jobName": "once"},
        headers={"Idempotency-Key": "key-1"},
    )

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == first.json()["jobId"]
    assert await count_jobs(engine) == 1


async def test_the_same_key_with_another_body_is_a_422(client: Client, engine: AsyncEngine) -> None:
    first = await submit(client, {"jobName": "once", "runAt": FAR_FUTURE}, {"Idempotency-Key": "key-2"})

    response = await client.post(
        "/jobs", json={"jobName": "twice", "runAt": FAR_FUTURE}, headers={"Idempotency-Key": "key-2"}
    )

    body = assert_problem(response, 422, "Idempotency-Key")
    assert first["jobId"] in body["detail"]
    assert await count_jobs(engine) == 1


async def test_concurrent_posts_with_one_key_make_one_job(client: Client, engine: AsyncEngine) -> None:
    body = {"jobName": "raced", "runAt": FAR_FUTURE}

    responses = await asyncio.gather(
        *(client.post("/jobs", json=body, headers={"Idempotency-Key": "raced-key"}) for _ in range(8))
    )

    assert sorted(response.status_code for response in responses) == [200] * 7 + [201]
    assert len({response.json()["jobId"] for response in responses}) == 1
    assert await count_jobs(engine) == 1


async def test_different_keys_make_different_jobs(client: Client, engine: AsyncEngine) -> None:
    for key in ("a", "b"):
        await submit(client, {"jobName": "same", "runAt": FAR_FUTURE}, {"Idempotency-Key": key})

    assert await count_jobs(engine) == 2


async def test_a_malformed_key_is_refused(client: Client, engine: AsyncEngine) -> None:
    for key in ["", "has space", "x" * 256]:
        response = await client.post("/jobs", json={"jobName": "x"}, headers={"Idempotency-Key": key})

        assert response.status_code == 400, (key, response.text)
    assert await count_jobs(engine) == 0


# --- cancel and retry -------------------------------------------------------------------------------------------


async def test_cancelling_a_queued_job_is_immediate_and_a_second_cancel_is_a_409(client: Client) -> None:
    job = await submit(client, {"jobName": "later", "runAt": FAR_FUTURE})

    response = await client.post(f"/jobs/{job['jobId']}/cancel")
    again = await client.post(f"/jobs/{job['jobId']}/cancel")

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finishedAt"] is not None
    assert cancelled["attempts"] == 0
    body = assert_problem(again, 409)
    assert "already cancelled" in body["detail"]


async def test_cancelling_a_running_job_ends_it(client: Client) -> None:
    job = await submit(client, {"jobName": "sleeper", "arguments": ["sleep"], "maxAttempts": 3})
    await wait_for_job(client, job["jobId"], lambda j: bool(j["attemptHistory"]) and j["attemptHistory"][0]["pid"])

    response = await client.post(f"/jobs/{job['jobId']}/cancel")

    assert response.status_code == 200, response.text
    assert response.json()["cancelRequestedAt"] is not None
    finished = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    assert finished["status"] == "cancelled"
    assert [a["outcome"] for a in finished["attemptHistory"]] == ["cancelled"]


async def test_cancelling_a_finished_or_unknown_job_is_refused(client: Client) -> None:
    job = await submit(client, {"jobName": "quick"})
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    assert_problem(await client.post(f"/jobs/{job['jobId']}/cancel"), 409)
    assert_problem(await client.post("/jobs/job-999999/cancel"), 404)
    assert_problem(await client.post("/jobs/nonsense/cancel"), 404)


async def test_a_crashed_job_runs_again_on_retry_with_one_more_attempt(client: Client) -> None:
    job = await submit(client, {"jobName": "fails", "arguments": ["fail"], "maxAttempts": 1})
    crashed = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    assert (crashed["status"], crashed["attempts"], crashed["maxAttempts"]) == ("crashed", 1, 1)

    response = await client.post(f"/jobs/{job['jobId']}/retry")

    assert response.status_code == 200, response.text
    retried = response.json()
    assert (retried["status"], retried["maxAttempts"], retried["exitCode"], retried["finishedAt"]) == (
        "retried",
        2,
        None,
        None,
    )
    again = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    assert (again["status"], again["attempts"]) == ("crashed", 2)
    assert [a["attempt"] for a in again["attemptHistory"]] == [1, 2]


async def test_a_job_cancelled_before_it_ran_is_queued_again_by_retry_and_runs(client: Client) -> None:
    job = await submit(client, {"jobName": "later", "runAt": FAR_FUTURE})
    await client.post(f"/jobs/{job['jobId']}/cancel")

    response = await client.post(f"/jobs/{job['jobId']}/retry")

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["cancelRequestedAt"]) == ("queued", None)
    finished = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    assert finished["status"] == "completed"


async def test_retry_of_a_completed_or_unfinished_job_is_a_409(client: Client) -> None:
    done = await submit(client, {"jobName": "quick"})
    await wait_for_job(client, done["jobId"], lambda j: j["status"] == "completed")
    waiting = await submit(client, {"jobName": "later", "runAt": FAR_FUTURE})

    assert (
        "only a cancelled or crashed job"
        in assert_problem(await client.post(f"/jobs/{done['jobId']}/retry"), 409)["detail"]
    )
    assert_problem(await client.post(f"/jobs/{waiting['jobId']}/retry"), 409)
    assert_problem(await client.post("/jobs/job-999999/retry"), 404)


# --- GET /jobs: keyset paging and filters -----------------------------------------------------------------------


async def insert_jobs(engine: AsyncEngine, count: int, status: str = "completed") -> list[int]:
    """`count` jobs written straight to the table, never due; returns their ids, oldest first."""
    async with engine.begin() as connection:
        result = await connection.execute(
            text("""
                INSERT INTO jobs (name, program, status, max_attempts, next_attempt_at)
                SELECT 'bulk-' || n, '/bin/true', :status, 2, NULL FROM generate_series(1, :count) AS n
                RETURNING id
            """),
            {"count": count, "status": status},
        )
        return sorted(result.scalars())


async def all_pages(client: Client, first_url: str) -> tuple[list[str], int]:
    """Every jobId, following Link headers from `first_url`; and how many pages that took."""
    seen: list[str] = []
    url: str | None = first_url
    pages = 0
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages += 1
        seen.extend(job["jobId"] for job in response.json())
        link = response.headers.get("link")
        if link is None:
            url = None
        else:
            match = LINK.match(link)
            assert match, link
            url = match.group("url")
        assert pages <= 1000, "paging does not end"
    return seen, pages


async def test_paging_through_1000_jobs_has_no_gap_and_no_repeat(client: Client, engine: AsyncEngine) -> None:
    ids = await insert_jobs(engine, 1000)

    seen, pages = await all_pages(client, "/jobs?limit=37")

    assert seen == [format_job_id(database_id) for database_id in reversed(ids)]
    assert pages == 28  # 27 full pages and one of 1; the last page has no Link


async def test_a_page_that_is_exactly_the_rest_has_no_next_link(client: Client, engine: AsyncEngine) -> None:
    ids = await insert_jobs(engine, 10)

    response = await client.get("/jobs?limit=10")
    second = await client.get(f"/jobs?limit=5&cursor={format_job_id(ids[5])}")

    assert "link" not in response.headers
    assert [job["jobId"] for job in second.json()] == [format_job_id(i) for i in reversed(ids[:5])]
    assert "link" not in second.headers


async def test_the_next_link_keeps_the_filters(client: Client, engine: AsyncEngine) -> None:
    await insert_jobs(engine, 5)
    await insert_jobs(engine, 5, status="crashed")

    response = await client.get("/jobs?status=crashed&limit=2")

    link = LINK.match(response.headers["link"])
    assert link is not None
    query = parse_qs(urlsplit(link.group("url")).query)
    assert (query["status"], query["limit"]) == (["crashed"], ["2"])
    assert re.fullmatch(r"job-\d+", query["cursor"][0])
    seen, _ = await all_pages(client, "/jobs?status=crashed&limit=2")
    assert len(seen) == 5


async def test_filters_by_status_name_program_and_creation_time(client: Client, engine: AsyncEngine) -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    async with engine.begin() as connection:
        rows = [
            ("task-1", "default", "completed", base),
            ("task-2", "report", "crashed", base + timedelta(days=1)),
            ("task_3", "report", "completed", base + timedelta(days=2)),
            ("backup", "default", "cancelled", base + timedelta(days=3)),
            ("task%4", "default", "crashed", base + timedelta(days=4)),
        ]
        for name, program_name, status, created_at in rows:
            await connection.execute(
                text("""
                    INSERT INTO jobs (name, program, program_name, status, max_attempts, next_attempt_at, created_at)
                    VALUES (:name, '/bin/true', :program_name, :status, 2, NULL, :created_at)
                """),
                {"name": name, "program_name": program_name, "status": status, "created_at": created_at},
            )

    async def names(query: str) -> list[str]:
        response = await client.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text
        return [job["jobName"] for job in response.json()]

    assert await names("name=task-") == ["task-2", "task-1"]
    assert await names("name=task_") == ["task_3"]  # _ and % are not wildcards
    assert await names("name=task%25") == ["task%4"]
    assert await names("program=report") == ["task_3", "task-2"]
    assert await names("program=nothing") == []
    assert await names("status=crashed,cancelled") == ["task%4", "backup", "task-2"]
    assert await names("createdAfter=2026-06-02T00:00:00Z") == ["task%4", "backup", "task_3", "task-2"]
    assert await names("createdBefore=2026-06-02T00:00:00Z") == ["task-1"]
    # createdAfter includes its moment, createdBefore does not; a time without an offset is UTC.
    assert await names("createdAfter=2026-06-02T00:00:00&createdBefore=2026-06-04T00:00:00Z") == ["task_3", "task-2"]
    assert await names("status=completed&program=report&name=task") == ["task_3"]
    assert await names("status=crashed&limit=1") == ["task%4"]


async def test_a_bad_filter_is_refused_naming_it(client: Client) -> None:
    for query, field in [
        ("cursor=17", "cursor"),
        ("cursor=job-0", "cursor"),
        ("createdAfter=yesterday", "createdAfter"),
        ("createdBefore=2026-13-01", "createdBefore"),
        ("name=", "name"),
        ("limit=0", "limit"),
    ]:
        assert_problem(await client.get(f"/jobs?{query}"), 400, field)


# --- attempts and output ----------------------------------------------------------------------------------------


async def test_attempts_are_listed_with_their_resource_use(client: Client) -> None:
    job = await submit(client, {"jobName": "fails", "arguments": ["fail"], "maxAttempts": 2})
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    response = await client.get(f"/jobs/{job['jobId']}/attempts")

    assert response.status_code == 200, response.text
    attempts = response.json()
    assert [(a["attempt"], a["outcome"], a["exitCode"]) for a in attempts] == [(1, "failed", 1), (2, "failed", 1)]
    for attempt in attempts:
        assert isinstance(attempt["userCpuMs"], int)
        assert isinstance(attempt["systemCpuMs"], int)
        assert attempt["maxRssKb"] > 0
        assert (attempt["stdoutBytes"], attempt["stderrBytes"]) == (0, 0)
    assert_problem(await client.get("/jobs/job-999999/attempts"), 404)


async def test_output_of_each_stream_is_served_from_this_nodes_file(client: Client) -> None:
    job = await submit(client, {"jobName": "talks", "arguments": ["talk"]})
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    stdout = await client.get(f"/jobs/{job['jobId']}/attempts/1/output")
    stderr = await client.get(f"/jobs/{job['jobId']}/attempts/1/output?stream=stderr")

    assert stdout.status_code == 200, stdout.text
    assert stdout.headers["content-type"].startswith("text/plain")
    assert (stdout.text, stdout.headers["output-source"]) == ("hello from stdout\n", "file")
    assert stderr.text == "hello from stderr\n"
    assert_problem(await client.get(f"/jobs/{job['jobId']}/attempts/2/output"), 404)
    assert_problem(await client.get(f"/jobs/{job['jobId']}/attempts/1/output?stream=stdin"), 400, "stream")


async def test_output_of_an_attempt_of_another_node_is_its_stored_tail_or_a_409_while_it_runs(
    client: Client, engine: AsyncEngine
) -> None:
    job = await submit(client, {"jobName": "talks", "arguments": ["talk"]})
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE attempts SET node_id = 'elsewhere' WHERE job_id = :id"), {"id": parse_job_id(job["jobId"])}
        )

    finished = await client.get(f"/jobs/{job['jobId']}/attempts/1/output?stream=stderr")

    assert (finished.text, finished.headers["output-source"]) == ("hello from stderr\n", "database-tail")
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE attempts SET outcome = 'running' WHERE job_id = :id"), {"id": parse_job_id(job["jobId"])}
        )
    body = assert_problem(await client.get(f"/jobs/{job['jobId']}/attempts/1/output"), 409)
    assert "'elsewhere'" in body["detail"]


async def test_following_a_finished_attempt_sends_its_output_then_the_end(client: Client) -> None:
    job = await submit(client, {"jobName": "talks", "arguments": ["talk"]})
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    response = await client.get(f"/jobs/{job['jobId']}/attempts/1/output?follow=true")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.replace("\r\n", "\n").split("\n\n") if block]
    offset = len(b"hello from stdout\n")
    assert events == [
        f"id: {offset}\nevent: output\ndata: hello from stdout\ndata: ",
        'event: end\ndata: {"outcome": "succeeded", "exitCode": 0, "signal": null}',
    ]


async def test_an_output_over_the_limit_is_served_cut_and_its_true_end_stored(
    client: Client, engine: AsyncEngine
) -> None:
    job = await submit(client, {"jobName": "floods", "program": "flood"})
    finished = await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    response = await client.get(f"/jobs/{job['jobId']}/attempts/1/output")

    assert finished["status"] == "completed"  # the program was not hurt by the limit
    [attempt] = finished["attemptHistory"]
    assert attempt["stdoutBytes"] == FLOOD_LINES * FLOOD_LINE_BYTES
    output = response.content
    assert OUTPUT_LIMIT_BYTES + OUTPUT_TAIL_BYTES <= len(output) <= OUTPUT_LIMIT_BYTES + OUTPUT_TAIL_BYTES + 512
    assert b"[jobmanager: output truncated at 4096 bytes" in output
    assert output.endswith(b"line 01999\n")
    async with engine.connect() as connection:
        tail = (
            await connection.execute(
                text("SELECT stdout_tail FROM attempts WHERE job_id = :id"), {"id": parse_job_id(job["jobId"])}
            )
        ).scalar_one()
    assert tail == output[-OUTPUT_TAIL_BYTES:].decode()
    assert tail.endswith("line 01999\n")
