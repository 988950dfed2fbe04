"""Initial schema: jobs, attempts, the attempt_facts view, and a comment on everything.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_STATUSES = ("queued", "running", "retried", "completed", "crashed", "cancelled")
ATTEMPT_OUTCOMES = ("running", "succeeded", "failed", "killed", "spawn_failed", "lost")


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE jobs (
            id              bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_jobs PRIMARY KEY,
            name            text NOT NULL,
            program         text NOT NULL,
            arguments       text[] NOT NULL DEFAULT '{{}}',
            status          text NOT NULL DEFAULT 'queued'
                            CONSTRAINT ck_jobs_status_known CHECK (status IN ({_sql_list(JOB_STATUSES)})),
            max_attempts    smallint NOT NULL CONSTRAINT ck_jobs_max_attempts_positive CHECK (max_attempts >= 1),
            attempts_count  smallint NOT NULL DEFAULT 0,
            next_attempt_at timestamptz DEFAULT now(),
            created_at      timestamptz NOT NULL DEFAULT now(),
            started_at      timestamptz,
            finished_at     timestamptz,
            exit_code       integer,
            CONSTRAINT ck_jobs_attempts_within_limit CHECK (attempts_count BETWEEN 0 AND max_attempts)
        )
    """)
    op.execute(f"""
        CREATE TABLE attempts (
            id                 bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_attempts PRIMARY KEY,
            job_id             bigint NOT NULL
                               CONSTRAINT fk_attempts_job_id_jobs REFERENCES jobs (id) ON DELETE CASCADE,
            attempt_number     smallint NOT NULL CONSTRAINT ck_attempts_number_positive CHECK (attempt_number >= 1),
            node_id            text NOT NULL,
            pid                integer,
            process_started_at timestamptz,
            outcome            text NOT NULL DEFAULT 'running'
                               CONSTRAINT ck_attempts_outcome_known CHECK (outcome IN ({_sql_list(ATTEMPT_OUTCOMES)})),
            exit_code          integer,
            signal             integer,
            started_at         timestamptz NOT NULL DEFAULT now(),
            finished_at        timestamptz,
            duration_ms        bigint CONSTRAINT ck_attempts_duration_not_negative CHECK (duration_ms >= 0),
            error              text,
            CONSTRAINT uq_attempts_job_id_attempt_number UNIQUE (job_id, attempt_number)
        )
    """)

    # The claim query: the oldest jobs whose next attempt is due.
    op.execute("CREATE INDEX ix_jobs_next_attempt_at ON jobs (next_attempt_at, id) WHERE next_attempt_at IS NOT NULL")
    # GET /jobs, newest first, optionally by status.
    op.execute("CREATE INDEX ix_jobs_status_id ON jobs (status, id DESC)")
    # Reconciliation: what this node still believes is running.
    op.execute("CREATE INDEX ix_attempts_node_id_running ON attempts (node_id) WHERE outcome = 'running'")

    op.execute("""
        CREATE VIEW attempt_facts AS
        SELECT
            a.id                                   AS attempt_id,
            a.job_id,
            j.name                                 AS job_name,
            j.program,
            a.node_id,
            a.attempt_number,
            a.outcome,
            a.outcome = 'succeeded'                AS succeeded,
            a.exit_code,
            a.signal,
            a.started_at,
            a.finished_at,
            a.duration_ms,
            char_length(j.name)                    AS name_length,
            j.name ~ '[0-9]'                       AS name_has_digits,
            cardinality(j.arguments)               AS argument_count
        FROM attempts a
        JOIN jobs j ON j.id = a.job_id
        WHERE a.outcome <> 'running'
    """)

    comments = {
        "TABLE jobs": "One row per submitted job. The status follows the state machine in service/domain/status.py.",
        "COLUMN jobs.id": "The job's number; the API shows it as job-<id>.",
        "COLUMN jobs.name": "jobName as submitted (1-200 characters, no control characters).",
        "COLUMN jobs.program": "Absolute path of the program the job runs (JOB_SCRIPT_PATH when it was accepted).",
        "COLUMN jobs.arguments": "The arguments passed to the program, in order; never interpreted by a shell.",
        "COLUMN jobs.status": "queued | running | retried | completed | crashed | cancelled.",
        "COLUMN jobs.max_attempts": "How many attempts the job may have in all (MAX_ATTEMPTS when accepted).",
        "COLUMN jobs.attempts_count": "How many attempts have started so far.",
        "COLUMN jobs.next_attempt_at": "When the next attempt may start; NULL while one runs or once the job is final.",
        "COLUMN jobs.created_at": "When the job was accepted (committed before the API answered).",
        "COLUMN jobs.started_at": "When its first attempt started.",
        "COLUMN jobs.finished_at": "When it reached a final status (completed, crashed, cancelled).",
        "COLUMN jobs.exit_code": "Exit code of the attempt that made the job final; NULL if it ended by a signal.",
        "TABLE attempts": "One row per run of a job's program. Written before the process starts.",
        "COLUMN attempts.id": "The attempt's own number, unique across all jobs.",
        "COLUMN attempts.job_id": "The job this attempt belongs to.",
        "COLUMN attempts.attempt_number": "1 for the first run of the job, 2 for its first retry, and so on.",
        "COLUMN attempts.node_id": "The service node that started the process (NODE_ID, stable across restarts).",
        "COLUMN attempts.pid": "Operating-system process id; NULL until the process has started.",
        "COLUMN attempts.process_started_at": "The process's start time per the OS: with pid, its true identity.",
        "COLUMN attempts.outcome": "running | succeeded | failed | killed | spawn_failed | lost.",
        "COLUMN attempts.exit_code": "The process's exit code; NULL if it was killed by a signal or never started.",
        "COLUMN attempts.signal": "The signal number that ended the process, if one did.",
        "COLUMN attempts.started_at": "When the attempt started (the process's start, once known).",
        "COLUMN attempts.finished_at": "When the service saw the process end.",
        "COLUMN attempts.duration_ms": "Wall-clock run time of the process in milliseconds.",
        "COLUMN attempts.error": "Why the program could not be started, or how it was lost.",
        "VIEW attempt_facts": "One row per finished attempt with the facts /stats uses; GROUP BY any of them.",
        "COLUMN attempt_facts.attempt_id": "attempts.id.",
        "COLUMN attempt_facts.job_id": "jobs.id.",
        "COLUMN attempt_facts.job_name": "jobs.name.",
        "COLUMN attempt_facts.program": "jobs.program.",
        "COLUMN attempt_facts.node_id": "attempts.node_id.",
        "COLUMN attempt_facts.attempt_number": "attempts.attempt_number (1 = first run, 2 = first retry, ...).",
        "COLUMN attempt_facts.outcome": "attempts.outcome; never running here.",
        "COLUMN attempt_facts.exit_code": "attempts.exit_code.",
        "COLUMN attempt_facts.signal": "attempts.signal.",
        "COLUMN attempt_facts.started_at": "attempts.started_at.",
        "COLUMN attempt_facts.finished_at": "attempts.finished_at.",
        "COLUMN attempt_facts.duration_ms": "attempts.duration_ms.",
        "COLUMN attempt_facts.succeeded": "True when the attempt exited 0; every other ending counts as a failure.",
        "COLUMN attempt_facts.name_length": "Characters in the job name.",
        "COLUMN attempt_facts.name_has_digits": "Whether the job name contains a digit 0-9.",
        "COLUMN attempt_facts.argument_count": "How many arguments the job was given.",
    }
    for target, comment in comments.items():
        escaped = comment.replace("'", "''")
        op.execute(f"COMMENT ON {target} IS '{escaped}'")


def downgrade() -> None:
    op.execute("DROP VIEW attempt_facts")
    op.execute("DROP TABLE attempts")
    op.execute("DROP TABLE jobs")
