"""Per-job resource limits on the job row, and on each attempt when its output files were removed.

Only adds columns (each NULL by default: no limit, files not removed yet) and one partial index; no column a view
reads is changed, and the outcomes stay as they are.

Revision ID: 0005
Revises: 0004_submitted_by
Create Date: 2026-12-10
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004_submitted_by"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = {
    "memory_limit_bytes": "bigint CONSTRAINT ck_jobs_memory_limit_positive CHECK (memory_limit_bytes > 0)",
    "cpu_limit_seconds": "integer CONSTRAINT ck_jobs_cpu_limit_positive CHECK (cpu_limit_seconds > 0)",
    "open_files_limit": "integer CONSTRAINT ck_jobs_open_files_limit_positive CHECK (open_files_limit > 0)",
}
ATTEMPT_COLUMNS = {"output_removed_at": "timestamptz"}
INDEXES = {
    # The pruner's question: which finished attempts of this node still have output files, oldest first.
    "ix_attempts_output_to_prune": (
        "attempts (node_id, finished_at) WHERE output_removed_at IS NULL AND finished_at IS NOT NULL"
    ),
    # The pruner's other question: which jobs have been final the longest.
    "ix_jobs_finished_at": "jobs (finished_at) WHERE finished_at IS NOT NULL",
}
COMMENTS = {
    "COLUMN jobs.memory_limit_bytes": (
        "RLIMIT_DATA of each attempt's program (memoryLimitBytes, or JOB_MEMORY_LIMIT_BYTES). NULL: none."
    ),
    "COLUMN jobs.cpu_limit_seconds": (
        "RLIMIT_CPU of each attempt's program (cpuLimitSeconds, or JOB_CPU_LIMIT_SECONDS). NULL: none."
    ),
    "COLUMN jobs.open_files_limit": (
        "RLIMIT_NOFILE of each attempt's program (openFilesLimit, or JOB_OPEN_FILES_LIMIT). NULL: none."
    ),
    "COLUMN attempts.output_removed_at": (
        "When the node that ran the attempt removed its output files (OUTPUT_RETENTION_DAYS); the tails stay here."
    ),
    "INDEX ix_attempts_output_to_prune": "Serves the pruner: finished attempts whose files are still on disk.",
    "INDEX ix_jobs_finished_at": "Serves the pruner: jobs final the longest, for JOB_RETENTION_DAYS.",
}


def _comment(target: str, comment: str) -> None:
    escaped = comment.replace("'", "''")
    op.execute(f"COMMENT ON {target} IS '{escaped}'")


def upgrade() -> None:
    op.execute(
        "ALTER TABLE jobs " + ", ".join(f"ADD COLUMN {name} {definition}" for name, definition in JOB_COLUMNS.items())
    )
    op.execute(
        "ALTER TABLE attempts "
        + ", ".join(f"ADD COLUMN {name} {definition}" for name, definition in ATTEMPT_COLUMNS.items())
    )
    for name, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {definition}")
    for target, comment in COMMENTS.items():
        _comment(target, comment)


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE attempts " + ", ".join(f"DROP COLUMN {name}" for name in ATTEMPT_COLUMNS))
    op.execute("ALTER TABLE jobs " + ", ".join(f"DROP COLUMN {name}" for name in JOB_COLUMNS))
