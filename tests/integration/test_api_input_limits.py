"""Bad input of every kind through the real app: a 4xx problem naming the field and the limit, nothing stored, and
no stored row that a read cannot return."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.validation import MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_JSON_DEPTH, MAX_REQUEST_BODY_BYTES
from service.app import create_app
from service.settings import Settings
from tests.support.api import Client, count_jobs, wait_for_job

JOB_SCRIPT = "import sys\nsys.exit(0)\n"
FINAL = {"completed", "crashed", "cancelled"}
JSON = {"content-type": "application/json"}
# Words a message must not show a client: the decoder's and the validator's own vocabulary.
RAW_WORDS = ("regex", "Input data was truncated", "`", "Expected")


@pytest.fixture
def app(make_settings: Callable[..., Settings], tmp_path: Path) -> Litestar:
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT, encoding="utf-8")
    return create_app(make_settings(job_script_path=script.resolve(), shutdown_mode="drain"))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app) as client:
        yield client


def problem(response: Any, status_code: int, *fields: str) -> dict[str, Any]:
    """A problem-details answer whose errors name `fields`, each message a sentence in the service's words."""
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status_code
    assert body["detail"]
    assert not any(word in body["detail"] for word in RAW_WORDS), body["detail"]
    if fields:
        assert [error["field"] for error in body["errors"]] == list(fields), body
        for error in body["errors"]:
            assert error["field"] in body["detail"] or error["field"] == "body", body
            assert not any(word in error["message"] for word in RAW_WORDS), error
    return body


async def post_raw(client: Client, raw: bytes) -> Any:
    return await client.post("/jobs", content=raw, headers=JSON)


# --- timestamps ---------------------------------------------------------------------------------------------------

OUTSIDE_THE_WINDOW = [
    "0001-01-01T00:00:00+01:00",  # 1 BC once in UTC
    "9999-12-31T23:59:59-05:00",  # year 10000 once in UTC
    "2067-11-12T07:48:34-19:32",  # an offset PostgreSQL refuses
    "1969-12-31T23:59:59Z",
    "9001-01-01T00:00:00Z",
    "9000-12-31T23:59:59-00:01",
]
AT_THE_EDGES = [
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ("9000-12-31T23:59:59Z", datetime(9000, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("9000-12-31T23:59:59+18:00", datetime(9000, 12, 31, 5, 59, 59, tzinfo=UTC)),
    ("1970-01-01T00:00:00-18:00", datetime(1970, 1, 1, 18, tzinfo=UTC)),
    ("2067-11-12T07:48:34-17:59", datetime(2067, 11, 13, 1, 47, 34, tzinfo=UTC)),
]


@pytest.mark.parametrize("run_at", OUTSIDE_THE_WINDOW)
async def test_a_run_at_outside_the_window_is_refused_and_every_read_still_works(
    client: Client, engine: AsyncEngine, run_at: str
) -> None:
    response = await client.post("/jobs", json={"jobName": "r", "runAt": run_at})

    body = problem(response, 400, "runAt")
    assert "1970-01-01T00:00:00Z" in body["detail"] or "18:00" in body["detail"]
    assert await count_jobs(engine) == 0
    for path in ("/jobs", "/jobs?status=queued"):
        assert (await client.get(path)).status_code == 200


@pytest.mark.parametrize(("run_at", "instant"), AT_THE_EDGES)
async def test_a_run_at_at_the_edges_is_stored_in_utc_and_read_back_everywhere(
    client: Client, run_at: str, instant: datetime
) -> None:
    response = await client.post("/jobs", json={"jobName": "edge", "runAt": run_at})

    assert response.status_code == 201, response.text
    job_id = response.json()["jobId"]
    detail = await client.get(f"/jobs/{job_id}")
    listed = await client.get("/jobs")
    # A due job may be running or done by now: every status it can have, read through the status index.
    by_status = await client.get("/jobs?status=queued,running,retried,completed,crashed")
    assert (detail.status_code, listed.status_code, by_status.status_code) == (200, 200, 200)
    assert datetime.fromisoformat(detail.json()["runAt"]) == instant
    assert [job["jobId"] for job in listed.json()] == [job_id]
    assert [job["jobId"] for job in by_status.json()] == [job_id]


@pytest.mark.parametrize("moment", OUTSIDE_THE_WINDOW)
@pytest.mark.parametrize("parameter", ["createdAfter", "createdBefore"])
async def test_a_creation_filter_outside_the_window_is_refused(client: Client, parameter: str, moment: str) -> None:
    problem(await client.get(f"/jobs?{parameter}={quote(moment)}"), 400, parameter)


@pytest.mark.parametrize("parameter", ["since", "until"])
async def test_a_stats_window_outside_the_window_is_refused(client: Client, parameter: str) -> None:
    response = await client.get("/stats", params={parameter: "9999-12-31T23:59:59-05:00"})

    body = problem(response, 400, parameter)
    assert "9000-12-31T23:59:59Z" in body["detail"]


# --- numbers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", ["40000", "0", "-1", "99999999999999999999"])
async def test_an_attempt_number_out_of_range_is_refused_stating_the_range(client: Client, attempt: str) -> None:
    job = (await client.post("/jobs", json={"jobName": "n"})).json()

    response = await client.get(f"/jobs/{job['jobId']}/attempts/{attempt}/output")

    body = problem(response, 400, "attempt")
    assert ("at most 32767" if int(attempt) > 1 else "at least 1") in body["detail"]


async def test_the_largest_attempt_number_is_a_404_when_there_is_no_such_attempt(client: Client) -> None:
    job = (await client.post("/jobs", json={"jobName": "n"})).json()

    response = await client.get(f"/jobs/{job['jobId']}/attempts/32767/output")

    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", "10"),
        ("priority", 10.5),
        ("priority", True),
        ("maxAttempts", "2"),
        ("timeoutSeconds", "10"),
        ("timeoutSeconds", False),
        ("memoryLimitBytes", "1073741824"),
    ],
)
async def test_a_number_must_be_a_json_number(client: Client, engine: AsyncEngine, field: str, value: Any) -> None:
    response = await client.post("/jobs", json={"jobName": "n", field: value})

    problem(response, 400, field)
    assert await count_jobs(engine) == 0


async def test_a_last_event_id_that_is_not_an_offset_is_refused(client: Client) -> None:
    job = (await client.post("/jobs", json={"jobName": "n"})).json()
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    response = await client.get(
        f"/jobs/{job['jobId']}/attempts/1/output?follow=true",
        headers={b"Last-Event-ID": b"\xb2"},  # "²", a digit to str.isdigit(), not to int()
    )

    problem(response, 400, "Last-Event-ID")


# --- text ---------------------------------------------------------------------------------------------------------

INVISIBLE = ["\u0085", "\u009f", "\u202e", "\u202a", "\u2066", "\u2069"]


@pytest.mark.parametrize("character", INVISIBLE)
async def test_c1_controls_and_bidirectional_formatting_are_refused_in_names_and_arguments(
    client: Client, engine: AsyncEngine, character: str
) -> None:
    named = await client.post("/jobs", json={"jobName": f"a{character}b"})
    argued = await client.post("/jobs", json={"jobName": "ok", "arguments": ["fine", f"a{character}b"]})

    problem(named, 400, "jobName")
    problem(argued, 400, "arguments[1]")
    assert await count_jobs(engine) == 0


@pytest.mark.parametrize("character", ["\x00", "\x1b", *INVISIBLE])
async def test_a_name_filter_with_a_control_character_is_refused(client: Client, character: str) -> None:
    problem(await client.get("/jobs", params={"name": f"a{character}b"}), 400, "name")
    problem(await client.get("/stats", params={"namePrefix": f"a{character}b"}), 400, "namePrefix")


async def test_a_program_filter_with_nul_is_refused(client: Client) -> None:
    problem(await client.get("/jobs?program=a%00b"), 400, "program")


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"jobName": "n" * 201}, "jobName", "jobName is 201 characters; the limit is 200"),
        ({"jobName": "a", "arguments": ["ok", "x" * 4097]}, "arguments[1]", "is 4097 characters; the limit is 4096"),
        ({"jobName": "a", "arguments": ["x"] * 257}, "arguments", "has 257 items; the limit is 256"),
        ({"jobName": "a", "priority": 1001}, "priority", "at most 1000"),
        ({"jobName": "a", "maxAttempts": 0}, "maxAttempts", "at least 1"),
        # Past a bigint: without an upper bound, the insert failed (a 500) when JOB_MEMORY_LIMIT_BYTES is unset.
        ({"jobName": "a", "memoryLimitBytes": 10**20}, "memoryLimitBytes", f"at most {2**60}"),
        ({"jobName": "a", "program": "../etc"}, "program", "63"),
        ({"jobName": "a\nb"}, "jobName", "control characters"),
    ],
)
async def test_each_message_names_the_field_and_the_limit(
    client: Client, payload: dict[str, Any], field: str, words: str
) -> None:
    body = problem(await client.post("/jobs", json=payload), 400, field)

    assert words in body["detail"]
    assert words in body["errors"][0]["message"]


@pytest.mark.parametrize("raw", [b'{"jobName": "a"', b'{"jobName": "a",}', b'{"jobName": "a"} x', b"\xff"])
async def test_malformed_json_is_described_in_a_sentence(client: Client, raw: bytes) -> None:
    body = problem(await post_raw(client, raw), 400, "body")

    assert body["detail"].startswith("the body is not valid JSON")


# --- the body as a whole ------------------------------------------------------------------------------------------


async def test_deep_nesting_is_refused_before_decoding(client: Client, engine: AsyncEngine) -> None:
    depth = 100_000
    raw = b'{"jobName":"n","arguments":' + b"[" * depth + b"]" * depth + b"}"

    body = problem(await post_raw(client, raw), 400, "body")

    assert str(MAX_JSON_DEPTH) in body["detail"]
    assert await count_jobs(engine) == 0


async def test_nesting_up_to_the_limit_is_judged_by_the_schema_and_brackets_in_strings_are_text(
    client: Client,
) -> None:
    # The object is one level, the arrays the rest: exactly MAX_JSON_DEPTH.
    nested = "[" * (MAX_JSON_DEPTH - 1) + '"x"' + "]" * (MAX_JSON_DEPTH - 1)
    at_limit = await post_raw(client, f'{{"jobName":"n","arguments":{nested}}}'.encode())
    bracketed = await client.post("/jobs", json={"jobName": "[[[[[[[[[[", "arguments": ["{" * 50, "[" * 50]})

    over = "[" * MAX_JSON_DEPTH + '"x"' + "]" * MAX_JSON_DEPTH
    one_too_deep = await post_raw(client, f'{{"jobName":"n","arguments":{over}}}'.encode())

    problem(at_limit, 400, "arguments[0]")
    assert str(MAX_JSON_DEPTH) in problem(one_too_deep, 400, "body")["detail"]
    assert bracketed.status_code == 201, bracketed.text


async def test_a_repeated_key_is_refused_naming_it(client: Client, engine: AsyncEngine) -> None:
    body = problem(await post_raw(client, b'{"jobName": "a", "arguments": [], "jobName": "b"}'), 400, "jobName")

    assert "twice" in body["detail"]
    assert await count_jobs(engine) == 0


async def test_a_body_over_the_limit_is_a_413_stating_it(client: Client, engine: AsyncEngine) -> None:
    raw = json.dumps({"jobName": "big", "arguments": ["x" * 4096] * 2000}).encode()
    assert len(raw) > MAX_REQUEST_BODY_BYTES

    body = problem(await post_raw(client, raw), 413, "body")

    assert str(MAX_REQUEST_BODY_BYTES) in body["detail"]
    assert await count_jobs(engine) == 0


async def test_the_largest_valid_job_fits_in_the_body_limit(client: Client) -> None:
    arguments = ["\U0001f600" * 4096] * 256  # four bytes of UTF-8 each
    raw = json.dumps({"jobName": "\U0001f600" * 200, "arguments": arguments}, ensure_ascii=False).encode()

    response = await post_raw(client, raw)

    assert response.status_code == 201, response.text[:500]


async def test_too_many_or_too_large_headers_are_a_431(client: Client) -> None:
    many = {f"x-extra-{number}": "1" for number in range(MAX_HEADER_COUNT + 1)}
    large = {"x-large": "a" * (MAX_HEADER_BYTES + 1)}

    for headers in (many, large):
        body = problem(await client.get("/jobs", headers=headers), 431)
        assert str(MAX_HEADER_COUNT) in body["detail"]
        assert str(MAX_HEADER_BYTES) in body["detail"]


# --- routes and parameters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "unknown"),
    [
        ("/jobs?stauts=running", ["stauts"]),
        ("/jobs?status=queued&colour=red&size=1", ["colour", "size"]),
        ("/stats?sinse=1h", ["sinse"]),
        ("/health?verbose=1", ["verbose"]),
    ],
)
async def test_an_unknown_query_parameter_is_refused_naming_it(client: Client, path: str, unknown: list[str]) -> None:
    body = problem(await client.get(path), 400, *unknown)

    assert all(name in body["detail"] for name in unknown)


async def test_a_known_query_parameter_of_every_route_is_still_taken(client: Client) -> None:
    job = (await client.post("/jobs", json={"jobName": "n"})).json()
    await wait_for_job(client, job["jobId"], lambda j: j["status"] in FINAL)

    for path in (
        "/jobs?status=completed&name=n&program=default&limit=5&createdAfter=2000-01-01T00:00:00Z",
        "/stats?since=1h&namePrefix=n",
        f"/jobs/{job['jobId']}/attempts/1/output?stream=stderr&follow=false",
    ):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_a_method_not_allowed_says_which_are(client: Client) -> None:
    response = await client.delete("/jobs")

    body = problem(response, 405)
    assert {method.strip() for method in response.headers["allow"].split(",")} >= {"GET", "POST"}
    assert "DELETE" in body["detail"]
