"""Stats discovery: attempt_facts gains the job's arguments; the rollup gains counts per value and per hour, and
a place to keep the sampled overlaps of the strongest findings.

`stats_rollup_values` holds, for every dimension /stats looks for failure factors in (an argument position, the name
family, the node, the hour, ...), the finished attempts and successes per value, per program and over all programs
(scope ''), so that the most frequent values are an index scan away however many distinct values there are.
`stats_rollup_hours` holds the same per hour started, per program and per name family, for "the last 24 h against
before". Both are filled by the same statement that folds the queues into `stats_rollup`.

Revision ID: 0007
Revises: 0006_nodes
Create Date: 2026-12-04
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006_nodes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _insight_views() -> ModuleType:
    """Migration 0002, whose attempt_facts this one extends (a migration is frozen: reusing its text is safe)."""
    path = Path(__file__).with_name("0002_insight_views.py")
    spec = importlib.util.spec_from_file_location("insight_views_0002", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SELECT_END = "\n    FROM attempts a"

TABLES = (
    """
    CREATE TABLE stats_rollup_values (
        scope     text NOT NULL,
        dimension text NOT NULL,
        key       jsonb NOT NULL,
        total     bigint NOT NULL,
        successes bigint NOT NULL,
        CONSTRAINT pk_stats_rollup_values PRIMARY KEY (scope, dimension, key)
    )
    """,
    "CREATE INDEX ix_stats_rollup_values_frequent ON stats_rollup_values (scope, dimension, total DESC)",
    """
    CREATE TABLE stats_rollup_hours (
        scope     text NOT NULL,
        hour      timestamptz NOT NULL,
        kind      text NOT NULL,
        value     text NOT NULL,
        total     bigint NOT NULL,
        successes bigint NOT NULL,
        CONSTRAINT pk_stats_rollup_hours PRIMARY KEY (scope, hour, kind, value)
    )
    """,
    """
    CREATE TABLE stats_rollup_overlaps (
        scope             text PRIMARY KEY,
        candidates        jsonb NOT NULL,
        finished_attempts bigint NOT NULL,
        masks             jsonb NOT NULL
    )
    """,
)

COMMENTS = {
    "COLUMN attempt_facts.arguments": "jobs.arguments: the job's arguments, in order.",
    "TABLE stats_rollup_values": (
        "Internal to /stats: finished attempts and successes per value of each dimension searched for failure "
        "factors, per program and over all programs. Rebuilt with stats_rollup; query attempt_facts instead."
    ),
    "COLUMN stats_rollup_values.scope": "jobs.program the counts are about; '' for all programs together.",
    "COLUMN stats_rollup_values.dimension": "argument_1, argument_2, ..., name_family, node, hour, weekday, ...",
    "COLUMN stats_rollup_values.key": "The value, as JSON (null for an argument position the job does not have).",
    "COLUMN stats_rollup_values.total": "Finished attempts with that value.",
    "COLUMN stats_rollup_values.successes": "Those of them that succeeded.",
    "INDEX ix_stats_rollup_values_frequent": "Serves /stats: the most frequent values of a dimension first.",
    "TABLE stats_rollup_hours": (
        "Internal to /stats: finished attempts and successes per hour started, per program and per name family, "
        "for the comparison of the recent window with the time before. Rebuilt with stats_rollup."
    ),
    "COLUMN stats_rollup_hours.scope": "jobs.program the counts are about; '' for all programs together.",
    "COLUMN stats_rollup_hours.hour": "The hour the attempts started in (date_trunc('hour', started_at), UTC).",
    "COLUMN stats_rollup_hours.kind": "program or name_family: what `value` is.",
    "COLUMN stats_rollup_hours.value": "The program, or the name family.",
    "COLUMN stats_rollup_hours.total": "Finished attempts that started in that hour.",
    "COLUMN stats_rollup_hours.successes": "Those of them that succeeded.",
    "TABLE stats_rollup_overlaps": (
        "Internal to /stats: the sampled overlap counts of the strongest findings, reused while the same findings "
        "are the strongest and the finished attempts grew by less than 1 %. Emptied with every rebuild."
    ),
    "COLUMN stats_rollup_overlaps.scope": "jobs.program the counts are about; '' for all programs together.",
    "COLUMN stats_rollup_overlaps.candidates": "The findings' ids, in bit order: bit i of a mask is candidates[i].",
    "COLUMN stats_rollup_overlaps.finished_attempts": "Finished attempts there were when the sample was counted.",
    "COLUMN stats_rollup_overlaps.masks": "[[mask, attempts, successes], ...]: the sample per combination.",
}


def _comment(target: str, comment: str) -> None:
    escaped = comment.replace("'", "''")
    op.execute(f"COMMENT ON {target} IS '{escaped}'")


def upgrade() -> None:
    views = _insight_views()
    if views.ATTEMPT_FACTS.count(_SELECT_END) != 1:
        raise RuntimeError("attempt_facts of migration 0002 no longer has the shape this migration extends")
    # Appended last: CREATE OR REPLACE VIEW keeps the existing columns, in order.
    op.execute(views.ATTEMPT_FACTS.replace(_SELECT_END, ",\n        j.arguments AS arguments" + _SELECT_END))
    for statement in TABLES:
        op.execute(statement)
    for target, comment in COMMENTS.items():
        _comment(target, comment)


def downgrade() -> None:
    op.execute("DROP TABLE stats_rollup_overlaps")
    op.execute("DROP TABLE stats_rollup_hours")
    op.execute("DROP TABLE stats_rollup_values")
    views = _insight_views()
    # A view cannot lose a column in place: drop attempt_facts and recreate it as 0002 left it.
    op.execute("DROP VIEW attempt_facts")
    op.execute(views.ATTEMPT_FACTS)
    for target, comment in views.COMMENTS.items():
        if target.startswith(("VIEW attempt_facts", "COLUMN attempt_facts.")):
            _comment(target, comment)
