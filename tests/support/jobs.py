"""Watching jobs of a server under test: until they are final, and how often their program really ran."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import wait_until

FINAL_STATUSES = frozenset({"completed", "crashed", "cancelled"})
JOBS_SECONDS = 30.0


def wait_until_final(
    client: httpx.Client, job_ids: Iterable[str], timeout: float = JOBS_SECONDS
) -> dict[str, dict[str, Any]]:
    """GET /jobs once every one of `job_ids` is final; returns them by jobId."""
    wanted = set(job_ids)
    last_seen: dict[str, str] = {}

    def all_final() -> dict[str, dict[str, Any]] | None:
        response = client.get("/jobs", params={"limit": 1000})
        assert response.status_code == 200, response.text
        listed = {item["jobId"]: item for item in response.json() if item["jobId"] in wanted}
        last_seen.update({job_id: item["status"] for job_id, item in listed.items()})
        if listed.keys() == wanted and all(item["status"] in FINAL_STATUSES for item in listed.values()):
            return listed
        return None

    return wait_until(all_final, timeout=timeout, message=lambda: f"all jobs final; last seen {last_seen}")


def executions_of(executions: Path) -> Counter[tuple[str, int]]:
    """How often each (jobId, attempt) ran, from the lines "<JOB_ID> <JOB_ATTEMPT>" the job programs append."""
    lines = executions.read_text(encoding="utf-8").splitlines() if executions.exists() else []
    return Counter((job_id, int(attempt)) for job_id, attempt in (line.split() for line in lines))
