"""Job control: cancel, timeouts, retry policy, priority, delayed start, idempotency, named programs, output, rusage.

Only adds columns, indexes and constraints; no column that a view (attempt_facts, job_overview) reads is changed.
The outcome CHECK is replaced to admit `cancelled` and `timed_out`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES_0001 = ("running", "succeeded", "failed", "killed", "spawn_failed", "lost")
OUTCOMES = (*OUTCOMES_0001, "cancelled", "timed_out")
PRIORITY_LIMIT = 1000


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


JOB_COLUMNS = {
    "program_name": "text NOT NULL DEFAULT 'default'",
    "priority": (
        f"integer NOT NULL DEFAULT 0 CONSTRAINT ck_jobs_priority_range "
        f"CHECK (priority BETWEEN {-PRIORITY_LIMIT} AND {PRIORITY_LIMIT})"
    ),
    "run_at": "timestamptz",
    "timeout_seconds": "double precision CONSTRAINT ck_jobs_timeout_positive CHECK (timeout_seconds > 0)",
    "cancel_requested_at": "timestamptz",
    "idempotency_key": "text",
    "request_fingerprint": "text",
}
ATTEMPT_COLUMNS = {
    "user_cpu_ms": "bigint",
    "system_cpu_ms": "bigint",
    "max_rss_kb": "bigint",
    "stdout_bytes": "bigint",
    "stderr_bytes": "bigint",
    "stdout_tail": "text",
    "stderr_tail": "text",
}

INDEXES = {
    # The claim query: due jobs, highest priority first, then the longest due (FIFO), then the oldest.
    "ix_jobs_claim_order": "jobs (priority DESC, next_attempt_at, id) WHERE next_attempt_at IS NOT NULL",
    # GET /jobs?program=, newest first, one page at a time.
    "ix_jobs_program_name_id": "jobs (program_name, id DESC)",
    # The same key twice is the same job: the index makes INSERT ... ON CONFLICT safe under concurrent requests.
    "uq_jobs_idempotency_key": "jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
}

COMMENTS = {
    "COLUMN jobs.program": "Absolute path of the program the job runs: program_name resolved when it was accepted.",
    "COLUMN jobs.program_name": (
        "The name the job's program was chosen by: default (JOB_SCRIPT_PATH) or a name of ALLOWED_PROGRAMS. "
        "Jobs accepted before names existed say default."
    ),
    "COLUMN jobs.priority": f"Higher runs first ({-PRIORITY_LIMIT} to {PRIORITY_LIMIT}, default 0); FIFO within one.",
    "COLUMN jobs.run_at": "runAt as submitted: not started before then. NULL: as soon as a slot is free.",
    "COLUMN jobs.timeout_seconds": (
        "An attempt running longer is ended (SIGTERM, SIGKILL after CANCEL_GRACE_SECONDS) as timed_out. NULL: none."
    ),
    "COLUMN jobs.cancel_requested_at": (
        "When a cancel was asked for while an attempt ran; the node running it ends it and the job becomes cancelled."
    ),
    "COLUMN jobs.idempotency_key": "The Idempotency-Key header of the POST that created the job; unique.",
    "COLUMN jobs.request_fingerprint": "SHA-256 of that POST's body: the same key with another body is refused.",
    "COLUMN jobs.max_attempts": (
        "How many attempts the job may have in all (maxAttempts, or MAX_ATTEMPTS); POST .../retry may raise it."
    ),
    "COLUMN attempts.outcome": "running | succeeded | failed | killed | spawn_failed | lost | cancelled | timed_out.",
    "COLUMN attempts.error": (
        "Why the program could not be started, how it was lost, or why the service ended it (cancel, timeout)."
    ),
    "COLUMN attempts.user_cpu_ms": "CPU time in user mode of the program and its waited-for children (rusage).",
    "COLUMN attempts.system_cpu_ms": "CPU time in kernel mode of the program and its waited-for children (rusage).",
    "COLUMN attempts.max_rss_kb": "Peak resident memory in KiB of the largest of those processes (ru_maxrss).",
    "COLUMN attempts.stdout_bytes": "Bytes the program wrote to stdout, kept or not; NULL without an exit keeper.",
    "COLUMN attempts.stderr_bytes": "Bytes the program wrote to stderr, kept or not; NULL without an exit keeper.",
    "COLUMN attempts.stdout_tail": "The last OUTPUT_TAIL_BYTES of stdout when the attempt ended (UTF-8, lossy).",
    "COLUMN attempts.stderr_tail": "The last OUTPUT_TAIL_BYTES of stderr when the attempt ended (UTF-8, lossy).",
    "INDEX ix_jobs_claim_order": "Serves the claim query: ORDER BY priority DESC, next_attempt_at, id.",
    "INDEX ix_jobs_program_name_id": "Serves GET /jobs?program=, newest first.",
    "INDEX uq_jobs_idempotency_key": "One job per Idempotency-Key.",
}

COMMENTS_0001 = {
    "COLUMN jobs.program": "Absolute path of the program the job runs (JOB_SCRIPT_PATH when it was accepted).",
    "COLUMN jobs.max_attempts": "How many attempts the job may have in all (MAX_ATTEMPTS when accepted).",
    "COLUMN attempts.outcome": "running | succeeded | failed | killed | spawn_failed | lost.",
    "COLUMN attempts.error": "Why the program could not be started, or how it was lost.",
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
    op.execute(f"""
        ALTER TABLE attempts
        DROP CONSTRAINT ck_attempts_outcome_known,
        ADD CONSTRAINT ck_attempts_outcome_known CHECK (outcome IN ({_sql_list(OUTCOMES)}))
    """)
    for name, definition in INDEXES.items():
        unique = "UNIQUE " if name.startswith("uq_") else ""
        op.execute(f"CREATE {unique}INDEX {name} ON {definition}")
    for target, comment in COMMENTS.items():
        _comment(target, comment)


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    # The older schema has no word for these endings; both were ended by a signal the service sent.
    op.execute("UPDATE attempts SET outcome = 'killed' WHERE outcome IN ('cancelled', 'timed_out')")
    op.execute(f"""
        ALTER TABLE attempts
        DROP CONSTRAINT ck_attempts_outcome_known,
        ADD CONSTRAINT ck_attempts_outcome_known CHECK (outcome IN ({_sql_list(OUTCOMES_0001)}))
    """)
    op.execute("ALTER TABLE attempts " + ", ".join(f"DROP COLUMN {name}" for name in ATTEMPT_COLUMNS))
    op.execute("ALTER TABLE jobs " + ", ".join(f"DROP COLUMN {name}" for name in JOB_COLUMNS))
    for target, comment in COMMENTS_0001.items():
        _comment(target, comment)
