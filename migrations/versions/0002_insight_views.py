"""Insight: richer attempt_facts, the job_overview view, the /stats rollup kept up to date by triggers, and indexes.

Nothing here changes a column of jobs or attempts: views, comments, indexes, and tables of our own.

The rollup (`stats_rollup`) holds /stats's counts already aggregated. Triggers on jobs and attempts only append to
small queues in the writer's own transaction (no shared counter row, so writers never wait on each other); /stats
folds the queues into the rollup. A change the queues cannot express (a finished attempt edited or deleted, a job
renamed) appends an invalidation instead, and /stats then rebuilds the rollup from a full scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The job-name family: the part of the name before its first '-', '_' or digit (empty if the name starts so).
_NAME_FAMILY = "substring(j.name FROM '^[^-_0-9]*')"

# The longest argument's length. A subquery over unnest() costs microseconds per row, so the common short argument
# lists are spelled out: this is 3x faster over a million attempts, and /stats rebuilds and windows scan them all.
_SPELLED_OUT_ARGUMENTS = 4
_MAX_ARGUMENT_LENGTH = (
    "CASE cardinality(j.arguments) WHEN 0 THEN 0 "
    + " ".join(
        f"WHEN {count} THEN greatest("
        + ", ".join(f"char_length(j.arguments[array_lower(j.arguments, 1) + {i}])" for i in range(count))
        + ")"
        for count in range(1, _SPELLED_OUT_ARGUMENTS + 1)
    )
    + " ELSE (SELECT max(char_length(argument)) FROM unnest(j.arguments) AS argument) END"
)

# Columns are only ever appended: CREATE OR REPLACE VIEW keeps the existing ones, in order, for psql users.
ATTEMPT_FACTS = f"""
    CREATE OR REPLACE VIEW attempt_facts AS
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
        cardinality(j.arguments)               AS argument_count,
        {_NAME_FAMILY}                         AS name_family,
        {_MAX_ARGUMENT_LENGTH}                 AS max_argument_length,
        a.attempt_number > 1                   AS is_retry,
        extract(hour FROM a.started_at)::integer   AS hour_of_day,
        extract(isodow FROM a.started_at)::integer AS day_of_week,
        CASE
            WHEN a.duration_ms IS NULL THEN 'unknown'
            WHEN a.duration_ms <= 100 THEN 'up to 100 ms'
            WHEN a.duration_ms <= 1000 THEN 'up to 1 s'
            WHEN a.duration_ms <= 10000 THEN 'up to 10 s'
            WHEN a.duration_ms <= 60000 THEN 'up to 1 min'
            WHEN a.duration_ms <= 600000 THEN 'up to 10 min'
            ELSE 'over 10 min'
        END                                    AS duration_bucket
    FROM attempts a
    JOIN jobs j ON j.id = a.job_id
    WHERE a.outcome <> 'running'
"""

ATTEMPT_FACTS_0001 = """
    CREATE VIEW attempt_facts AS
    SELECT
        a.id AS attempt_id, a.job_id, j.name AS job_name, j.program, a.node_id, a.attempt_number, a.outcome,
        a.outcome = 'succeeded' AS succeeded, a.exit_code, a.signal, a.started_at, a.finished_at, a.duration_ms,
        char_length(j.name) AS name_length, j.name ~ '[0-9]' AS name_has_digits,
        cardinality(j.arguments) AS argument_count
    FROM attempts a
    JOIN jobs j ON j.id = a.job_id
    WHERE a.outcome <> 'running'
"""

JOB_OVERVIEW = f"""
    CREATE OR REPLACE VIEW job_overview AS
    SELECT
        j.id                                            AS job_id,
        'job-' || j.id                                  AS api_job_id,
        j.name                                          AS job_name,
        {_NAME_FAMILY}                                  AS name_family,
        j.program,
        j.arguments,
        cardinality(j.arguments)                        AS argument_count,
        j.status,
        j.status = 'completed'                          AS succeeded,
        j.status IN ('completed', 'crashed', 'cancelled') AS is_final,
        j.max_attempts,
        j.attempts_count,
        greatest(j.attempts_count - 1, 0)               AS retries,
        j.status = 'completed' AND j.attempts_count > 1 AS rescued_by_retry,
        j.created_at,
        j.started_at,
        j.finished_at,
        j.exit_code,
        j.finished_at - j.created_at                    AS turnaround,
        latest.attempt_number                           AS latest_attempt_number,
        latest.outcome                                  AS latest_outcome,
        latest.exit_code                                AS latest_exit_code,
        latest.signal                                   AS latest_signal,
        latest.node_id                                  AS latest_node_id,
        latest.started_at                               AS latest_started_at,
        latest.finished_at                              AS latest_finished_at,
        latest.duration_ms                              AS latest_duration_ms,
        latest.error                                    AS latest_error
    FROM jobs j
    LEFT JOIN LATERAL (
        SELECT a.attempt_number, a.outcome, a.exit_code, a.signal, a.node_id, a.started_at, a.finished_at,
               a.duration_ms, a.error
        FROM attempts a
        WHERE a.job_id = j.id
        ORDER BY a.attempt_number DESC
        LIMIT 1
    ) AS latest ON true
"""

# The columns of a finished attempt, and of a job, that /stats depends on: a change to any invalidates the rollup.
_ATTEMPT_FACT_COLUMNS = (
    "job_id",
    "attempt_number",
    "node_id",
    "outcome",
    "exit_code",
    "signal",
    "started_at",
    "duration_ms",
)
_JOB_FACT_COLUMNS = ("name", "program", "arguments")
# What the jobs are counted by: a change moves a job from one count to another, without any rebuild.
_JOB_COUNT_COLUMNS = ("program", "status", "attempts_count > 1")
ATTEMPT_FACTS_0001_COLUMNS = (
    "attempt_id",
    "job_id",
    "job_name",
    "program",
    "node_id",
    "attempt_number",
    "outcome",
    "succeeded",
    "exit_code",
    "signal",
    "started_at",
    "finished_at",
    "duration_ms",
    "name_length",
    "name_has_digits",
    "argument_count",
)


def _changed(columns: Sequence[str]) -> str:
    """SQL: true when a row of the transition table `o` (old) differs from `n` (new) in any of `columns`."""
    return f"({', '.join(f'(o.{c})' for c in columns)}) IS DISTINCT FROM ({', '.join(f'(n.{c})' for c in columns)})"


ROLLUP_TABLES = (
    """
    CREATE TABLE stats_rollup (
        program   text NOT NULL,
        dimension text NOT NULL,
        key       jsonb NOT NULL,
        total     bigint NOT NULL,
        successes bigint NOT NULL,
        CONSTRAINT pk_stats_rollup PRIMARY KEY (program, dimension, key)
    )
    """,
    """
    CREATE TABLE stats_rollup_state (
        singleton   boolean NOT NULL DEFAULT true
                    CONSTRAINT pk_stats_rollup_state PRIMARY KEY
                    CONSTRAINT ck_stats_rollup_state_singleton CHECK (singleton),
        fingerprint text NOT NULL,
        built_at    timestamptz NOT NULL
    )
    """,
    "CREATE TABLE stats_rollup_pending_attempts (attempt_id bigint CONSTRAINT pk_stats_rollup_pending_attempts "
    "PRIMARY KEY)",
    """
    CREATE TABLE stats_rollup_pending_jobs (
        id      bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_stats_rollup_pending_jobs PRIMARY KEY,
        program text NOT NULL,
        status  text NOT NULL,
        retried boolean NOT NULL,
        jobs    bigint NOT NULL
    )
    """,
    """
    CREATE TABLE stats_rollup_invalidations (
        id     bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_stats_rollup_invalidations PRIMARY KEY,
        reason text NOT NULL,
        at     timestamptz NOT NULL DEFAULT now()
    )
    """,
)

QUEUE_TABLES = ("stats_rollup_pending_attempts", "stats_rollup_pending_jobs", "stats_rollup_invalidations")

# (function name, body, trigger definition). Statement-level with transition tables: one extra INSERT per
# statement however many rows it touched (a bulk load stays set-based).
ROLLUP_TRIGGERS: tuple[tuple[str, str, str], ...] = (
    (
        "stats_rollup_attempts_inserted",
        """
        INSERT INTO stats_rollup_pending_attempts (attempt_id)
        SELECT id FROM inserted_rows WHERE outcome <> 'running'
        ON CONFLICT DO NOTHING;
        """,
        "AFTER INSERT ON attempts REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_attempts_updated",
        f"""
        INSERT INTO stats_rollup_pending_attempts (attempt_id)
        SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.outcome = 'running' AND n.outcome <> 'running'
        ON CONFLICT DO NOTHING;
        IF EXISTS (
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.outcome <> 'running' AND {_changed(_ATTEMPT_FACT_COLUMNS)}
        ) THEN
            INSERT INTO stats_rollup_invalidations (reason) VALUES ('a finished attempt was changed');
        END IF;
        """,
        "AFTER UPDATE ON attempts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_attempts_deleted",
        """
        IF EXISTS (SELECT 1 FROM deleted_rows WHERE outcome <> 'running') THEN
            INSERT INTO stats_rollup_invalidations (reason) VALUES ('a finished attempt was deleted');
        END IF;
        """,
        "AFTER DELETE ON attempts REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_attempts_truncated",
        "INSERT INTO stats_rollup_invalidations (reason) VALUES ('attempts was truncated');",
        "AFTER TRUNCATE ON attempts FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_jobs_inserted",
        """
        INSERT INTO stats_rollup_pending_jobs (program, status, retried, jobs)
        SELECT program, status, attempts_count > 1, count(*) FROM inserted_rows GROUP BY 1, 2, 3;
        """,
        "AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_jobs_updated",
        f"""
        -- A job that changed status (or started its first retry) moves from one count of the jobs to another.
        INSERT INTO stats_rollup_pending_jobs (program, status, retried, jobs)
        SELECT program, status, retried, sum(jobs) FROM (
            SELECT o.program, o.status, o.attempts_count > 1 AS retried, -1 AS jobs
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {_changed(_JOB_COUNT_COLUMNS)}
            UNION ALL
            SELECT n.program, n.status, n.attempts_count > 1, 1
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {_changed(_JOB_COUNT_COLUMNS)}
        ) AS moves
        GROUP BY 1, 2, 3
        HAVING sum(jobs) <> 0;
        IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE {_changed(_JOB_FACT_COLUMNS)}) THEN
            INSERT INTO stats_rollup_invalidations (reason)
                VALUES ('a job''s name, program or arguments changed');
        END IF;
        """,
        "AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_jobs_deleted",
        """
        INSERT INTO stats_rollup_pending_jobs (program, status, retried, jobs)
        SELECT program, status, attempts_count > 1, -count(*) FROM deleted_rows GROUP BY 1, 2, 3;
        """,
        "AFTER DELETE ON jobs REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT",
    ),
    (
        "stats_rollup_jobs_truncated",
        "INSERT INTO stats_rollup_invalidations (reason) VALUES ('jobs was truncated');",
        "AFTER TRUNCATE ON jobs FOR EACH STATEMENT",
    ),
)

INDEXES = {
    # ?since= / ?until= select attempts by start time.
    "ix_attempts_started_at": "attempts (started_at)",
    # ?namePrefix= is a LIKE 'prefix%' on the name; text_pattern_ops lets it use the index whatever the collation.
    "ix_jobs_name_pattern": "jobs (name text_pattern_ops)",
    # The jobs counted in a window are those created in it.
    "ix_jobs_created_at": "jobs (created_at)",
}

COMMENTS = {
    "VIEW attempt_facts": (
        "One row per finished attempt (outcome is not running) with the facts /stats uses; GROUP BY any of them. "
        "Hours and weekdays are in the session's TimeZone."
    ),
    "COLUMN attempt_facts.attempt_id": "attempts.id.",
    "COLUMN attempt_facts.job_id": "jobs.id.",
    "COLUMN attempt_facts.job_name": "jobs.name.",
    "COLUMN attempt_facts.program": "jobs.program.",
    "COLUMN attempt_facts.node_id": "attempts.node_id.",
    "COLUMN attempt_facts.attempt_number": "attempts.attempt_number (1 = first run, 2 = first retry, ...).",
    "COLUMN attempt_facts.outcome": "attempts.outcome; never running here.",
    "COLUMN attempt_facts.succeeded": "True when the attempt exited 0; every other ending counts as a failure.",
    "COLUMN attempt_facts.exit_code": "attempts.exit_code.",
    "COLUMN attempt_facts.signal": "attempts.signal.",
    "COLUMN attempt_facts.started_at": "attempts.started_at.",
    "COLUMN attempt_facts.finished_at": "attempts.finished_at.",
    "COLUMN attempt_facts.duration_ms": "attempts.duration_ms (NULL when unknown, e.g. a lost attempt).",
    "COLUMN attempt_facts.name_length": "Characters (not bytes) in the job name.",
    "COLUMN attempt_facts.name_has_digits": "Whether the job name contains a digit 0-9.",
    "COLUMN attempt_facts.argument_count": "How many arguments the job was given.",
    "COLUMN attempt_facts.name_family": (
        "The job name up to its first '-', '_' or digit: task-1 and task-2 are family task. Empty when the name "
        "starts with one of those."
    ),
    "COLUMN attempt_facts.max_argument_length": "Characters in the job's longest argument; 0 without arguments.",
    "COLUMN attempt_facts.is_retry": "attempt_number > 1.",
    "COLUMN attempt_facts.hour_of_day": "Hour (0-23) of started_at in the session's TimeZone (SHOW timezone).",
    "COLUMN attempt_facts.day_of_week": "ISO weekday of started_at in the session's TimeZone: 1 Monday ... 7 Sunday.",
    "COLUMN attempt_facts.duration_bucket": (
        "duration_ms in bands, upper bounds included: up to 100 ms, up to 1 s, up to 10 s, up to 1 min, "
        "up to 10 min, over 10 min; unknown when duration_ms is NULL."
    ),
    "VIEW job_overview": "One row per job, with its latest attempt (NULLs when it has none yet).",
    "COLUMN job_overview.job_id": "jobs.id.",
    "COLUMN job_overview.api_job_id": "The id the API shows: job-<id>.",
    "COLUMN job_overview.job_name": "jobs.name.",
    "COLUMN job_overview.name_family": "The job name up to its first '-', '_' or digit (as in attempt_facts).",
    "COLUMN job_overview.program": "jobs.program.",
    "COLUMN job_overview.arguments": "jobs.arguments.",
    "COLUMN job_overview.argument_count": "How many arguments the job was given.",
    "COLUMN job_overview.status": "jobs.status: queued | running | retried | completed | crashed | cancelled.",
    "COLUMN job_overview.succeeded": "status = completed: an attempt exited 0.",
    "COLUMN job_overview.is_final": "The status is final (completed, crashed or cancelled).",
    "COLUMN job_overview.max_attempts": "jobs.max_attempts.",
    "COLUMN job_overview.attempts_count": "Attempts started so far.",
    "COLUMN job_overview.retries": "attempts_count - 1 (0 for a job not started yet).",
    "COLUMN job_overview.rescued_by_retry": "Completed after at least one failed attempt: a retry saved it.",
    "COLUMN job_overview.created_at": "jobs.created_at.",
    "COLUMN job_overview.started_at": "jobs.started_at.",
    "COLUMN job_overview.finished_at": "jobs.finished_at.",
    "COLUMN job_overview.exit_code": "jobs.exit_code: of the attempt that made the job final.",
    "COLUMN job_overview.turnaround": "finished_at - created_at: from submission to the final status.",
    "COLUMN job_overview.latest_attempt_number": "The highest attempt_number of the job.",
    "COLUMN job_overview.latest_outcome": "That attempt's outcome (running while it runs).",
    "COLUMN job_overview.latest_exit_code": "That attempt's exit code.",
    "COLUMN job_overview.latest_signal": "The signal that ended that attempt, if one did.",
    "COLUMN job_overview.latest_node_id": "The node that ran that attempt.",
    "COLUMN job_overview.latest_started_at": "When that attempt started.",
    "COLUMN job_overview.latest_finished_at": "When that attempt ended.",
    "COLUMN job_overview.latest_duration_ms": "That attempt's run time in milliseconds.",
    "COLUMN job_overview.latest_error": "Why that attempt could not start, or how it was lost.",
    "TABLE stats_rollup": (
        "Internal to /stats: counts of finished attempts already aggregated, per program and per dimension of "
        "/stats. Rebuilt from attempt_facts when invalid; query attempt_facts instead."
    ),
    "COLUMN stats_rollup.program": "jobs.program the counts are about.",
    "COLUMN stats_rollup.dimension": (
        "What the row counts: all, pattern, attempt_number, outcome, name_family, node, hour, duration_bucket, jobs."
    ),
    "COLUMN stats_rollup.key": "The value within the dimension (a pattern id, an hour, ...), as JSON.",
    "COLUMN stats_rollup.total": "Finished attempts with that value (for dimension jobs: jobs, by status).",
    "COLUMN stats_rollup.successes": "Those of them that succeeded.",
    "TABLE stats_rollup_state": (
        "Internal to /stats: which pattern registry, views and TimeZone the rollup was built for."
    ),
    "COLUMN stats_rollup_state.singleton": "Always true: the table has at most one row.",
    "COLUMN stats_rollup_state.fingerprint": "Hash of the patterns, the attempt_facts definition and the TimeZone.",
    "COLUMN stats_rollup_state.built_at": "When the rollup was last rebuilt from a full scan.",
    "TABLE stats_rollup_pending_attempts": "Internal to /stats: attempts finished since the rollup was last folded.",
    "COLUMN stats_rollup_pending_attempts.attempt_id": "attempts.id of a finished attempt not yet counted.",
    "TABLE stats_rollup_pending_jobs": "Internal to /stats: changes to the counts of jobs since the last fold.",
    "COLUMN stats_rollup_pending_jobs.id": "Order of arrival.",
    "COLUMN stats_rollup_pending_jobs.program": "jobs.program of the jobs counted.",
    "COLUMN stats_rollup_pending_jobs.status": "jobs.status of the jobs counted.",
    "COLUMN stats_rollup_pending_jobs.retried": "attempts_count > 1 for the jobs counted.",
    "COLUMN stats_rollup_pending_jobs.jobs": "Jobs that came into this count (positive) or left it (negative).",
    "TABLE stats_rollup_invalidations": "Internal to /stats: changes that force a rebuild of the rollup.",
    "COLUMN stats_rollup_invalidations.id": "Order of arrival.",
    "COLUMN stats_rollup_invalidations.reason": "What changed.",
    "COLUMN stats_rollup_invalidations.at": "When.",
    **{
        f"FUNCTION {name}()": f"Trigger of /stats's rollup ({definition.split(' FOR ')[0].lower()})."
        for name, _body, definition in ROLLUP_TRIGGERS
    },
    **{f"INDEX {name}": f"Serves /stats filters: {definition}." for name, definition in INDEXES.items()},
}


def _comment(target: str, comment: str) -> None:
    escaped = comment.replace("'", "''")
    op.execute(f"COMMENT ON {target} IS '{escaped}'")


def upgrade() -> None:
    op.execute(ATTEMPT_FACTS)
    op.execute(JOB_OVERVIEW)
    for statement in ROLLUP_TABLES:
        op.execute(statement)
    for table in QUEUE_TABLES:
        # Rows come and go with every /stats request: vacuum after a thousand dead ones, however small the table.
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,"
            " autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000)"
        )
    for name, body, definition in ROLLUP_TRIGGERS:
        # Transition tables carry no statistics, so the planner would pair old and new rows with a nested loop:
        # quadratic for a bulk UPDATE. Within these functions only, hash joins are the only sensible plan.
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET enable_nestloop = off "
            f"AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(f"CREATE TRIGGER {name} {definition} EXECUTE FUNCTION {name}()")
    for name, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {definition}")
    for target, comment in COMMENTS.items():
        _comment(target, comment)


def downgrade() -> None:
    for name, _body, definition in reversed(ROLLUP_TRIGGERS):
        table = definition.split(" ON ")[1].split()[0]
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    for table in (
        "stats_rollup_invalidations",
        "stats_rollup_pending_jobs",
        "stats_rollup_pending_attempts",
        "stats_rollup_state",
        "stats_rollup",
    ):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP VIEW job_overview")
    op.execute("DROP VIEW attempt_facts")
    op.execute(ATTEMPT_FACTS_0001)
    _comment("VIEW attempt_facts", COMMENTS["VIEW attempt_facts"])
    for column in ATTEMPT_FACTS_0001_COLUMNS:
        _comment(f"COLUMN attempt_facts.{column}", COMMENTS[f"COLUMN attempt_facts.{column}"])
