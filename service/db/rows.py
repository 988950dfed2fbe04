"""The columns the stores select, and one mapper per record from a row of them (from SQLAlchemy or asyncpg)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Protocol

from service.domain.records import AttemptRecord, JobRecord
from service.domain.status import AttemptOutcome, JobStatus

# Every job query selects these from `jobs j` (or a CTE named j with the same columns).
JOB_COLUMNS = """
    j.id, j.name, j.program, j.arguments, j.status, j.max_attempts, j.attempts_count,
    j.created_at, j.started_at, j.finished_at, j.exit_code,
    (SELECT a.duration_ms FROM attempts a
      WHERE a.job_id = j.id AND a.duration_ms IS NOT NULL
      ORDER BY a.attempt_number DESC LIMIT 1) AS last_duration_ms,
    j.program_name, j.priority, j.run_at, j.timeout_seconds, j.cancel_requested_at,
    j.submitted_by,
    j.memory_limit_bytes, j.cpu_limit_seconds, j.open_files_limit
"""

_ATTEMPT_COLUMN_NAMES = (
    "id", "job_id", "attempt_number", "node_id", "pid", "process_started_at", "outcome", "exit_code", "signal",
    "started_at", "finished_at", "duration_ms", "error", "user_cpu_ms", "system_cpu_ms", "max_rss_kb",
    "stdout_bytes", "stderr_bytes",
)  # fmt: skip
# Every attempt query selects these from `attempts a`.
ATTEMPT_COLUMNS = ", ".join(f"a.{name}" for name in _ATTEMPT_COLUMN_NAMES)


class Row(Protocol):
    """A row by column name: SQLAlchemy's `row._mapping`, or an asyncpg record."""

    def __getitem__(self, name: str, /) -> Any: ...  # noqa: ANN401  (a column holds any SQL type)


_JOB_FIELDS = tuple(field.name for field in fields(JobRecord))
_ATTEMPT_FIELDS = tuple(field.name for field in fields(AttemptRecord))


def job_from_row(row: Row) -> JobRecord:
    """A job selected with JOB_COLUMNS; other columns riding along (a notification, a fingerprint) are ignored."""
    values = {name: row[name] for name in _JOB_FIELDS}
    values["status"] = JobStatus(values["status"])
    return JobRecord(**values)


def attempt_from_row(row: Row) -> AttemptRecord:
    """An attempt selected with ATTEMPT_COLUMNS; other columns riding along are ignored."""
    values = {name: row[name] for name in _ATTEMPT_FIELDS}
    values["outcome"] = AttemptOutcome(values["outcome"])
    return AttemptRecord(**values)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern for names that start with `prefix` taken literally: its % and _ are not wildcards (escaped
    with a backslash, LIKE's default escape character)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
