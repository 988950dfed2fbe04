"""Stats by name family: the rollup's counts per name family as well as per program, so that `?namePrefix=` with a
prefix of letters is summed from a few rows instead of scanning its attempts.

`stats_rollup_families` holds what `stats_rollup` holds, per name family and program. The values, hours and sampled
overlaps of a family live beside the programs' in their tables, under the scope `family:<name family>` (a program
is an absolute path: no scope of a program starts so). The jobs queue gains the job's name family, so that folding
it counts jobs per family too; the job triggers fill it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As attempt_facts.name_family (migration 0002).
_NAME_FAMILY = "substring({row}.name FROM '^[^-_0-9]*')"

FAMILY_JOB_TRIGGERS: dict[str, str] = {
    "stats_rollup_jobs_inserted": f"""
        INSERT INTO stats_rollup_pending_jobs (program, name_family, status, retried, jobs)
        SELECT program, {_NAME_FAMILY.format(row="inserted_rows")}, status, attempts_count > 1, count(*)
        FROM inserted_rows GROUP BY 1, 2, 3, 4;
    """,
    "stats_rollup_jobs_deleted": f"""
        INSERT INTO stats_rollup_pending_jobs (program, name_family, status, retried, jobs)
        SELECT program, {_NAME_FAMILY.format(row="deleted_rows")}, status, attempts_count > 1, -count(*)
        FROM deleted_rows GROUP BY 1, 2, 3, 4;
    """,
    # A renamed job invalidates the rollup (the 0002 part of the body, kept): its moves may use the new name.
    "stats_rollup_jobs_updated": f"""
        INSERT INTO stats_rollup_pending_jobs (program, name_family, status, retried, jobs)
        SELECT program, name_family, status, retried, sum(jobs) FROM (
            SELECT o.program, {_NAME_FAMILY.format(row="o")} AS name_family, o.status,
                   o.attempts_count > 1 AS retried, -1 AS jobs
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {{changed}}
            UNION ALL
            SELECT n.program, {_NAME_FAMILY.format(row="n")}, n.status, n.attempts_count > 1, 1
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {{changed}}
        ) AS moves
        GROUP BY 1, 2, 3, 4
        HAVING sum(jobs) <> 0;
        IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE {{fact_changed}}) THEN
            INSERT INTO stats_rollup_invalidations (reason)
                VALUES ('a job''s name, program or arguments changed');
        END IF;
    """,
}

TABLE = """
    CREATE TABLE stats_rollup_families (
        name_family text NOT NULL,
        program     text NOT NULL,
        dimension   text NOT NULL,
        key         jsonb NOT NULL,
        total       bigint NOT NULL,
        successes   bigint NOT NULL,
        CONSTRAINT pk_stats_rollup_families PRIMARY KEY (name_family, program, dimension, key)
    )
"""
# name_family LIKE 'prefix%' reads the families of a prefix whatever the collation.
INDEX = "CREATE INDEX ix_stats_rollup_families_prefix ON stats_rollup_families (name_family text_pattern_ops)"

COMMENTS = {
    "TABLE stats_rollup_families": (
        "Internal to /stats: the counts of stats_rollup per name family and program, for ?namePrefix=. Rebuilt "
        "with stats_rollup; query attempt_facts instead."
    ),
    "COLUMN stats_rollup_families.name_family": "attempt_facts.name_family the counts are about.",
    "COLUMN stats_rollup_families.program": "jobs.program the counts are about.",
    "COLUMN stats_rollup_families.dimension": "As stats_rollup.dimension.",
    "COLUMN stats_rollup_families.key": "As stats_rollup.key.",
    "COLUMN stats_rollup_families.total": "As stats_rollup.total.",
    "COLUMN stats_rollup_families.successes": "As stats_rollup.successes.",
    "INDEX ix_stats_rollup_families_prefix": "Serves /stats?namePrefix=: the families that start with a prefix.",
    "COLUMN stats_rollup_pending_jobs.name_family": "Name family of the jobs counted (as attempt_facts.name_family).",
}
# Counts queued or rolled up before this migration know no family: the next /stats rebuilds them all.
_INVALIDATE = "INSERT INTO stats_rollup_invalidations (reason) VALUES ('the rollup''s shape changed (migration {})')"


def _insight_views() -> ModuleType:
    """Migration 0002, whose job triggers this one replaces (a migration is frozen: reusing its text is safe)."""
    path = Path(__file__).with_name("0002_insight_views.py")
    spec = importlib.util.spec_from_file_location("insight_views_0002", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replace_function(name: str, body: str) -> None:
    # As in 0002: transition tables carry no statistics; hash joins are the only sensible plan here.
    op.execute(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET enable_nestloop = off "
        f"AS $$ BEGIN {body} RETURN NULL; END $$"
    )


def _comment(target: str, comment: str) -> None:
    escaped = comment.replace("'", "''")
    op.execute(f"COMMENT ON {target} IS '{escaped}'")


def upgrade() -> None:
    views = _insight_views()
    changed = views._changed(views._JOB_COUNT_COLUMNS)
    fact_changed = views._changed(views._JOB_FACT_COLUMNS)
    op.execute("ALTER TABLE stats_rollup_pending_jobs ADD COLUMN name_family text NOT NULL DEFAULT ''")
    for name, body in FAMILY_JOB_TRIGGERS.items():
        _replace_function(name, body.format(changed=changed, fact_changed=fact_changed))
    op.execute(TABLE)
    op.execute(INDEX)
    for target, comment in COMMENTS.items():
        _comment(target, comment)
    op.execute(_INVALIDATE.format(revision))


def downgrade() -> None:
    views = _insight_views()
    for name, body, _definition in views.ROLLUP_TRIGGERS:
        if name in FAMILY_JOB_TRIGGERS:
            _replace_function(name, body)
    op.execute("ALTER TABLE stats_rollup_pending_jobs DROP COLUMN name_family")
    op.execute("DROP TABLE stats_rollup_families")
    op.execute("DELETE FROM stats_rollup_values WHERE scope LIKE 'family:%'")
    op.execute("DELETE FROM stats_rollup_hours WHERE scope LIKE 'family:%'")
    op.execute("DELETE FROM stats_rollup_overlaps WHERE scope LIKE 'family:%' OR scope LIKE 'namePrefix:%'")
    op.execute(_INVALIDATE.format(down_revision))
