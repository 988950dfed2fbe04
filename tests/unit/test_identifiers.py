"""Public job ids: `job-17` in the API, 17 in the database, and None for anything that cannot name a job."""

from __future__ import annotations

import pytest

from service.domain.identifiers import format_job_id, parse_job_id

MAX_BIGINT = 2**63 - 1  # jobs.id is a PostgreSQL bigint


@pytest.mark.parametrize("database_id", [1, 9, 10, 17, 1_000_000, MAX_BIGINT])
def test_format_and_parse_round_trip(database_id: int) -> None:
    public_id = format_job_id(database_id)
    assert public_id == f"job-{database_id}"
    assert parse_job_id(public_id) == database_id


@pytest.mark.parametrize(
    "public_id",
    [
        "",
        "job-",
        "17",
        "job17",
        "job_17",
        "JOB-17",
        "Job-17",
        "jobs-17",
        "job--17",
        "job-+17",
        "job-1.5",
        "job-1e3",
        "job-0x1f",
        "job-17a",
        "job- 17",
        " job-17",
        "job-17 ",
        "job-17\n",
        "job-\uff11\uff17",  # full-width "17": int() would accept these digits, the API must not
        "job-\u0661\u0667",  # Arabic-Indic "17", likewise
        "job-17/attempts",
    ],
)
def test_malformed_ids_name_no_job(public_id: str) -> None:
    assert parse_job_id(public_id) is None


@pytest.mark.parametrize("public_id", ["job-0", "job-00", "job-01", "job-007"])
def test_zero_and_leading_zeros_name_no_job(public_id: str) -> None:
    # Ids start at 1, and "job-07" must not be a second spelling of "job-7".
    assert parse_job_id(public_id) is None


@pytest.mark.parametrize(
    "public_id",
    [
        f"job-{MAX_BIGINT + 1}",
        "job-9999999999999999999",  # 19 digits, still beyond bigint
        "job-10000000000000000000",  # 20 digits
        "job-" + "9" * 400,
    ],
)
def test_ids_beyond_bigint_name_no_job(public_id: str) -> None:
    # Passing such a number to PostgreSQL would fail with an error instead of a 404.
    assert parse_job_id(public_id) is None
