"""Public job identifiers: the API says `job-17` where the database says 17."""

from __future__ import annotations

import re

JOB_ID_PREFIX = "job-"
_JOB_ID_PATTERN = re.compile(r"job-([1-9][0-9]{0,18})")
_MAX_BIGINT = 2**63 - 1


def format_job_id(database_id: int) -> str:
    return f"{JOB_ID_PREFIX}{database_id}"


def parse_job_id(public_id: str) -> int | None:
    """The database id behind `public_id`, or None when it cannot name any job."""
    match = _JOB_ID_PATTERN.fullmatch(public_id)
    if match is None:
        return None
    database_id = int(match.group(1))
    return database_id if database_id <= _MAX_BIGINT else None
