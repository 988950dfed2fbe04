"""A job's resource limits: what POST /jobs asks for, never above the settings, which fill in what it leaves out."""

from __future__ import annotations

from service.api.errors import ProblemError
from service.api.schemas import JobCreate
from service.domain.limits import JobLimits


def _lowered(field: str, setting: str, requested: int | None, limit: int | None) -> int | None:
    if requested is None:
        return limit
    if limit is not None and requested > limit:
        raise ProblemError(
            status_code=422,
            detail=f"{field} is {requested}; the limit is {limit} ({setting})",
            field_errors=[{"field": field, "message": f"more than {setting} ({limit})", "source": "body"}],
        )
    return requested


def resolve_job_limits(data: JobCreate, settings_limits: JobLimits) -> JobLimits:
    """The limits the job is stored with; a 422 naming the field and the limit when one asks for more."""
    return JobLimits(
        memory_bytes=_lowered(
            "memoryLimitBytes", "JOB_MEMORY_LIMIT_BYTES", data.memory_limit_bytes, settings_limits.memory_bytes
        ),
        cpu_seconds=_lowered(
            "cpuLimitSeconds", "JOB_CPU_LIMIT_SECONDS", data.cpu_limit_seconds, settings_limits.cpu_seconds
        ),
        open_files=_lowered(
            "openFilesLimit", "JOB_OPEN_FILES_LIMIT", data.open_files_limit, settings_limits.open_files
        ),
    )
