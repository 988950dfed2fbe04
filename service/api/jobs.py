"""POST /jobs, GET /jobs, GET /jobs/{jobId}, POST /jobs/{jobId}/cancel, POST /jobs/{jobId}/retry."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from service.api.auth import caller_name
from service.api.dependencies import JobIntake, SupervisorHandle
from service.api.errors import ProblemError, problem_response
from service.api.job_limits import resolve_job_limits
from service.api.schemas import JobCreate, JobDetail, JobRead
from service.api.validation import (
    MAX_JSON_DEPTH,
    checked_instant,
    checked_name_prefix,
    checked_program_name,
    validate_job_body,
)
from service.db.job_store import JobStore
from service.domain.identifiers import format_job_id, parse_job_id
from service.domain.programs import DEFAULT_PROGRAM_NAME
from service.domain.records import CancelEffect, JobFilter, JobRecord, NewJob
from service.domain.status import REOPENABLE_STATUSES, JobStatus
from service.domain.timestamps import WINDOW_DESCRIPTION, as_utc

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Visible ASCII: a key is shown in logs and problem details, and compared byte for byte.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
NAME_PREFIX_MAX_LENGTH = 200
CURSOR_PARAMETER = "cursor"

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "Makes a repeated POST safe: the same key with the same body answers 200 with the job the first "
            "request created; the same key with another body is refused (422)."
        ),
        examples=[Example(value="9b2f6c1e-2d7a-4c59-9a57-8f0c6a4f2a10")],
    ),
]


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


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    database_id = parse_job_id(cursor)
    if database_id is None:
        raise ProblemError(
            status_code=400,
            detail=f"cursor: {cursor!r} is not a jobId; pass on the cursor of the Link header's next page",
            field_errors=[{"field": CURSOR_PARAMETER, "message": "not a jobId", "source": "query"}],
        )
    return database_id


def _next_page_link(request: Request[Any, Any, Any], last_job: JobRecord) -> str:
    """`<…?…&cursor=job-N>; rel="next"`: the same query, starting after the last job of this page."""
    query = [(key, value) for key, value in request.query_params.multi_items() if key != CURSOR_PARAMETER]
    query.append((CURSOR_PARAMETER, format_job_id(last_job.id)))
    return f'<{request.url.path}?{urlencode(query)}>; rel="next"'


def _fingerprint(data: JobCreate) -> str:
    """The request as decoded, hashed: field order, spacing and fields given with their fixed defaults (arguments
    [], priority 0, program "default") make no difference. maxAttempts and timeoutSeconds left out are not the same
    as given: their defaults are settings, which may change."""
    normalized = msgspec.structs.replace(data, program=data.program or DEFAULT_PROGRAM_NAME)
    return hashlib.sha256(msgspec.json.encode(normalized)).hexdigest()


async def _job_or_404(job_store: JobStore, job_id: str) -> JobRecord:
    database_id = parse_job_id(job_id)
    job = await job_store.find_job(database_id) if database_id is not None else None
    if job is None:
        raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
    return job


def _resolve_program(requested: str | None, programs: Mapping[str, Path]) -> tuple[str, Path]:
    name = requested or DEFAULT_PROGRAM_NAME
    path = programs.get(name)
    if path is None:
        known = ", ".join(sorted(programs))
        raise ProblemError(
            status_code=422,
            detail=f"program: {name!r} is not an allowed program; use one of {known}",
            field_errors=[{"field": "program", "message": f"unknown program {name!r}", "source": "body"}],
        )
    return name, path


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]  # noqa: RUF012  (Litestar reads it as a class attribute)

    @post(
        status_code=HTTP_201_CREATED,
        summary="Submit a job",
        guards=[validate_job_body],
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=JobRead,
                description="The Idempotency-Key was used before with the same body: the job it created.",
            ),
            400: problem_response(
                f"A field out of its limits, a repeated key, a value of the wrong type, a runAt outside the window, "
                f"or arrays and objects nested deeper than {MAX_JSON_DEPTH} levels."
            ),
            413: problem_response("The body is larger than the limit (the detail says it)."),
            415: problem_response("The body is not declared as JSON (Content-Type: application/json)."),
            422: problem_response("An unknown program, or an Idempotency-Key used before with another body."),
            429: problem_response("MAX_QUEUED_JOBS jobs are queued; try again after Retry-After seconds."),
        },
    )
    async def submit_job(
        self,
        *,
        data: JSONBody[JobCreate],
        job_intake: NamedDependency[JobIntake],
        idempotency_key: IdempotencyKey = None,
        request: Request[Any, Any, Any],
    ) -> Response[JobRead]:
        """Store the job (committed before this answers) and wake the supervisor. Never waits for a process.

        An unknown `program`, or an Idempotency-Key already used with another body, is a 422. With MAX_QUEUED_JOBS
        jobs queued, a 429 with Retry-After; nothing is stored.
        """
        job_store, job_defaults, queue_gauge = job_intake.job_store, job_intake.defaults, job_intake.queue_gauge
        program_name, program = _resolve_program(data.program, job_defaults.programs)
        await queue_gauge.check_room()
        new_job = NewJob(
            name=data.job_name,
            program=str(program),
            arguments=data.arguments,
            max_attempts=data.max_attempts or job_defaults.max_attempts,
            program_name=program_name,
            priority=data.priority,
            # In UTC: the offset was only the client's way of writing the instant (and PostgreSQL takes less).
            run_at=None if data.run_at is None else as_utc(data.run_at),
            timeout_seconds=data.timeout_seconds if data.timeout_seconds is not None else job_defaults.timeout_seconds,
            submitted_by=caller_name(request),
            limits=resolve_job_limits(data, job_defaults.limits),
        )
        if idempotency_key is None:
            job = await job_store.submit_job(new_job)
            created = True
        else:
            submission = await job_store.submit_job_idempotently(
                new_job, idempotency_key=idempotency_key, fingerprint=_fingerprint(data)
            )
            if not submission.same_request:
                raise ProblemError(
                    status_code=422,
                    detail=(
                        f"Idempotency-Key {idempotency_key!r} was used for {format_job_id(submission.job.id)} with "
                        "a different body; use a new key for a new job"
                    ),
                    field_errors=[
                        {"field": "Idempotency-Key", "message": "used before with another body", "source": "header"}
                    ],
                )
            job, created = submission.job, submission.created
        if created:
            queue_gauge.accepted()
            job_intake.count_accepted()
            logger.info(
                "job %s accepted: name %r, program %s, %d argument(s), submitted by %s",
                format_job_id(job.id),
                job.name,
                job.program_name,
                len(job.arguments),
                job.submitted_by or "anyone (no authentication)",
            )
            job_intake.supervisor.wake()
        return Response(JobRead.from_record(job), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get(
        summary="List jobs, newest first",
        response_headers=[
            ResponseHeader(
                name="Link",
                description='`<...&cursor=job-N>; rel="next"` when there may be more jobs: the next page\'s URL.',
                documentation_only=True,
            )
        ],
    )
    async def list_jobs(
        self,
        *,
        request: Request[Any, Any, Any],
        job_store: NamedDependency[JobStore],
        status: Annotated[
            list[str] | None,
            QueryParameter(description="Only jobs with this status; repeat it or separate with commas for several."),
        ] = None,
        name: Annotated[
            str | None,
            QueryParameter(
                min_length=1, max_length=NAME_PREFIX_MAX_LENGTH, description="Only jobs whose name starts so."
            ),
        ] = None,
        program: Annotated[
            str | None, QueryParameter(description="Only jobs of this program (its name: `default`, ...).")
        ] = None,
        created_after: Annotated[
            datetime | None,
            QueryParameter(
                name="createdAfter",
                description=f"Created at or after (ISO 8601; UTC without offset; within {WINDOW_DESCRIPTION}).",
            ),
        ] = None,
        created_before: Annotated[
            datetime | None,
            QueryParameter(
                name="createdBefore",
                description=f"Created before (ISO 8601; UTC without offset; within {WINDOW_DESCRIPTION}).",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[
            str | None,
            QueryParameter(description="Where the page starts: the jobId given in the previous page's Link header."),
        ] = None,
    ) -> Response[list[JobRead]]:
        """A JSON array, newest first. When more jobs may follow, a `Link: <...>; rel="next"` header gives the
        URL of the next page (keyset paging: a page costs the same however many jobs there are)."""
        job_filter = JobFilter(
            statuses=_parse_statuses(status),
            name_prefix=checked_name_prefix("name", name),
            program_name=checked_program_name("program", program),
            created_after=checked_instant("createdAfter", created_after),
            created_before=checked_instant("createdBefore", created_before),
            before_id=_parse_cursor(cursor),
        )
        # One more than asked for tells whether a next page exists, without a count.
        jobs = await job_store.list_jobs(limit=limit + 1, job_filter=job_filter)
        headers = {}
        if len(jobs) > limit:
            jobs = jobs[:limit]
            headers["Link"] = _next_page_link(request, jobs[-1])
        return Response([JobRead.from_record(job) for job in jobs], headers=headers)

    @get("/{job_id:str}", summary="One job with its attempts", responses={404: problem_response("No such job.")})
    async def get_job(self, job_id: FromPath[str], job_store: NamedDependency[JobStore]) -> JobDetail:
        job = await _job_or_404(job_store, job_id)
        attempts = await job_store.list_attempts(job.id)
        return JobDetail.from_records(job, attempts)

    @post(
        "/{job_id:str}/cancel",
        status_code=HTTP_200_OK,
        summary="Cancel a job",
        responses={
            404: problem_response("No such job."),
            409: problem_response("The job is already completed, crashed or cancelled."),
        },
    )
    async def cancel_job(
        self,
        job_id: FromPath[str],
        job_store: NamedDependency[JobStore],
        supervisor: NamedDependency[SupervisorHandle],
    ) -> JobRead:
        """A queued or waiting job is `cancelled` at once. A running one: the node running it sends SIGTERM to its
        process group, then SIGKILL after CANCEL_GRACE_SECONDS; the job is `cancelled` once that attempt has
        ended (until then `cancelRequestedAt` says a cancel is on its way). A final job is a 409."""
        database_id = parse_job_id(job_id)
        result = await job_store.cancel_job(database_id) if database_id is not None else None
        if result is None:
            raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
        if result.effect is CancelEffect.ALREADY_FINAL:
            raise ProblemError(
                status_code=409, detail=f"job {job_id} is already {result.job.status.value}; there is nothing to cancel"
            )
        if result.effect is CancelEffect.REQUESTED:
            logger.info("job %s cancel requested; the node running it ends its attempt", job_id)
            supervisor.wake()  # it may be this node: no need to wait for the notification
        else:
            logger.info("job %s cancelled before it ran", job_id)
        return JobRead.from_record(result.job)

    @post(
        "/{job_id:str}/retry",
        status_code=HTTP_200_OK,
        summary="Run a crashed or cancelled job again",
        responses={
            404: problem_response("No such job."),
            409: problem_response("The job is not crashed or cancelled."),
        },
    )
    async def retry_job(
        self,
        job_id: FromPath[str],
        job_store: NamedDependency[JobStore],
        supervisor: NamedDependency[SupervisorHandle],
    ) -> JobRead:
        """The job becomes due at once as a new attempt (`retried`; `queued` if it never ran). Its `maxAttempts` is
        raised to `attempts + 1` when it has no attempt left. Any other status is a 409."""
        database_id = parse_job_id(job_id)
        result = await job_store.reopen_job(database_id) if database_id is not None else None
        if result is None:
            raise ProblemError(status_code=404, detail=f"no job with jobId {job_id!r}")
        if not result.reopened:
            allowed = " or ".join(sorted(status.value for status in REOPENABLE_STATUSES))
            raise ProblemError(
                status_code=409,
                detail=f"job {job_id} is {result.job.status.value}; only a {allowed} job can be retried",
            )
        logger.info("job %s retried by request: attempt %d is due", job_id, result.job.attempts_count + 1)
        supervisor.wake()
        return JobRead.from_record(result.job)
