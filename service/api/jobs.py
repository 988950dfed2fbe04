"""POST /jobs, GET /jobs, GET /jobs/{jobId}."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from service.api.dependencies import JobDefaults, SupervisorHandle
from service.api.errors import ProblemError
from service.api.schemas import JobCreate, JobDetail, JobRead
from service.db.repository import Repository
from service.domain.identifiers import format_job_id, parse_job_id
from service.domain.status import JobStatus

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _parse_statuses(values: list[str] | None) -> list[JobStatus]:
    statuses = []
    for value in values or []:
        for part in value.split(","):
            try:
                statuses.append(JobStatus(part.strip()))
            except ValueError:
                known = ", ".join(s.value for s in JobStatus)
                raise ProblemError(
                    status_code=400,
                    detail=f"status: {part!r} is not a job status; use one of {known}",
                    field_errors=[{"field": "status", "message": f"unknown status {part!r}", "source": "query"}],
                ) from None
    return statuses


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]  # noqa: RUF012  (Litestar reads it as a class attribute)

    @post(status_code=HTTP_201_CREATED, summary="Submit a job")
    async def submit_job(
        self,
        data: JSONBody[JobCreate],
        repository: NamedDependency[Repository],
        supervisor: NamedDependency[SupervisorHandle],
        job_defaults: NamedDependency[JobDefaults],
    ) -> JobRead:
        """Store the job (committed before this answers) and wake the supervisor. Never waits for a process."""
        job = await repository.submit_job(
            name=data.job_name,
            program=str(job_defaults.program),
            arguments=data.arguments,
            max_attempts=job_defaults.max_attempts,
        )
        logger.info("job %s accepted: name %r, %d argument(s)", format_job_id(job.id), job.name, len(job.arguments))
        supervisor.wake()
        return JobRead.from_record(job)

    @get(summary="List jobs, newest first")
    async def list_jobs(
        self,
        repository: NamedDependency[Repository],
        status: Annotated[
            list[str] | None,
            QueryParameter(description="Only jobs with this status; repeat it or separate with commas for several."),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
    ) -> list[JobRead]:
        jobs = await repository.list_jobs(statuses=_parse_statuses(status), limit=limit)
        return [JobRead.from_record(job) for job in jobs]

    @get("/{job_id:str}", summary="One job with its attempts")
    async def get_job(self, job_id: FromPath[str], repository: NamedDependency[Repository]) -> JobDetail:
        database_id = parse_job_id(job_id)
        job = await repository.find_job(database_id) if database_id is not None else None
        if job is None:
            raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
        attempts = await repository.list_attempts(job.id)
        return JobDetail.from_records(job, attempts)
