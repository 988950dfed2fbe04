"""The SQL that builds and folds the /stats rollup: two passes over the facts for every table of the rollup.

Besides the patterns (FILTER aggregates per program and name family, one pass), every count of the rollup is attempts
and successes per group of some columns: a breakdown, a value of a dimension of the findings, an hour started. One
`GROUP BY GROUPING SETS` counts them all per program and name family (one hash table per set, two aggregates each),
and a breakdown and the value counts of the same dimension are one set. Those rows, summed per program, over all
programs and per name family, are then written to `stats_rollup`, `stats_rollup_families`, `stats_rollup_values` and
`stats_rollup_hours`. A scan of a window (service/stats/query.py) counts its own way: its values over a sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.stats.discovery_sql import (
    ALL_PROGRAMS,
    FAMILY_KIND,
    FAMILY_SCOPE_PREFIX,
    PROGRAM_KIND,
    REBUILD_MIN_VALUE_ATTEMPTS,
    STARTED_HOUR,
    VALUE_DIMENSIONS,
)
from service.stats.patterns import Pattern
from service.stats.query import ALL, DIMENSIONS, JOBS, PATTERN, pattern_count_columns, pattern_count_unpivot

NAME_FAMILY = "name_family"
# As attempt_facts.name_family (migration 0002).
_JOBS_BY_STATUS = f"""
    SELECT program, substring(name FROM '^[^-_0-9]*') AS {NAME_FAMILY}, status, attempts_count > 1 AS retried,
           count(*) AS jobs
    FROM jobs GROUP BY 1, 2, 3, 4
"""
_FAMILY_SCOPE = f"'{FAMILY_SCOPE_PREFIX}' || {NAME_FAMILY}"


@dataclass(frozen=True, slots=True)
class _Set:
    """One grouping set (besides `program` and `name_family`, which every set has) and where its rows go."""

    columns: tuple[str, ...]
    key: str
    """SQL: the row's jsonb key."""
    rollup_dimension: str | None = None
    """Its `stats_rollup.dimension`, if it is one."""
    value_dimension: str | None = None
    """Its `stats_rollup_values.dimension`, if it is one."""
    hours: bool = False
    """Its rows are the attempts per hour started (`stats_rollup_hours`)."""


def _sets() -> list[_Set]:
    # The set of no further column is every program's and family's total: the `all` breakdown, and the name_family
    # breakdown and values (and the program values) once summed.
    sets = [_Set((), "'null'::jsonb", rollup_dimension=ALL)]
    for breakdown in DIMENSIONS:
        if not breakdown.columns or breakdown.name == NAME_FAMILY:
            continue
        # A breakdown over one column is also the value counts of the dimension of that column.
        shared = next(
            (
                d
                for d in VALUE_DIMENSIONS
                if breakdown.columns == (d.column,) and d.fact_column and d.name == breakdown.name
            ),
            None,
        )
        sets.append(
            _Set(
                breakdown.columns,
                f"coalesce({breakdown.key}, 'null'::jsonb)",
                rollup_dimension=breakdown.name,
                value_dimension=shared.name if shared else None,
            )
        )
    covered = {s.value_dimension for s in sets}
    for dimension in VALUE_DIMENSIONS:
        if dimension.name in covered or dimension.name in ("program", NAME_FAMILY):
            continue
        sets.append(
            _Set(
                (dimension.column,),
                f"coalesce(to_jsonb({dimension.column}), 'null'::jsonb)",
                value_dimension=dimension.name,
            )
        )
    sets.append(_Set(("started_hour",), "'null'::jsonb", hours=True))
    return sets


def _fact_columns(patterns: Sequence[Pattern]) -> str:
    columns = ["program", "succeeded", NAME_FAMILY]
    for breakdown in DIMENSIONS:
        columns.extend(c for c in breakdown.columns if c not in columns)
    for dimension in VALUE_DIMENSIONS:
        if dimension.name == "program":
            continue
        if dimension.fact_column:
            if dimension.column not in columns:
                columns.append(dimension.column)
        else:
            columns.append(f"{dimension.expression} AS {dimension.column}")
    columns.extend(f"coalesce(({p.condition}), false) AS matches_{p.id}" for p in patterns)
    columns.append(f"{STARTED_HOUR} AS started_hour")
    return ",\n ".join(columns)


def _counted(sets: Sequence[_Set]) -> str:
    """The one pass: each row labelled with its set's position (`grouping_set`) and its key."""
    grouped = list(dict.fromkeys(c for s in sets for c in s.columns))
    mask = f"GROUPING({', '.join(grouped)})"

    def set_mask(s: _Set) -> int:
        # GROUPING(c1, ..., cn) has bit n - i set when ci is *not* grouped by in the row's set.
        return sum(1 << (len(grouped) - 1 - i) for i, column in enumerate(grouped) if column not in s.columns)

    position = " ".join(f"WHEN {set_mask(s)} THEN {i}" for i, s in enumerate(sets))
    key = " ".join(f"WHEN {set_mask(s)} THEN {s.key}" for s in sets)
    grouping_sets = ", ".join(f"({', '.join(('program', NAME_FAMILY, *s.columns))})" for s in sets)
    return f"""
        counted AS MATERIALIZED (
            SELECT program, {NAME_FAMILY}, CASE {mask} {position} END AS grouping_set, CASE {mask} {key} END AS key,
                   started_hour, count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
            FROM facts
            GROUP BY GROUPING SETS ({grouping_sets})
        )"""


def _choose(sets: Sequence[_Set], attribute: str) -> tuple[str, str]:
    """SQL: the `attribute` of a row's set (CASE over grouping_set), and the condition that it has one."""
    chosen = [(i, getattr(s, attribute)) for i, s in enumerate(sets) if getattr(s, attribute)]
    case = "CASE grouping_set " + " ".join(f"WHEN {i} THEN '{value}'" for i, value in chosen) + " END"
    return case, f"grouping_set IN ({', '.join(str(i) for i, _ in chosen)})"


_ADD = "SET total = r.total + excluded.total, successes = r.successes + excluded.successes"
_SUMS = "sum(total)::bigint, sum(successes)::bigint"


def _values(minimum: int) -> str:
    """The rows of stats_rollup_values: per program, over all programs, per family (from `labelled` and `totals`)."""
    scopes = (("program", "program"), (f"'{ALL_PROGRAMS}'", None), (_FAMILY_SCOPE, NAME_FAMILY))
    branches = []
    for scope, by in scopes:
        group = f"{by}, " if by else ""
        branches.append(
            f"SELECT {scope}, value_dimension, key, {_SUMS} FROM labelled WHERE value_dimension IS NOT NULL"
            f" GROUP BY {group}value_dimension, key HAVING sum(total) >= {minimum}"
        )
        # The name_family and program values are the totals of a family and of a program within the scope.
        for dimension, column in ((NAME_FAMILY, NAME_FAMILY), ("program", "program")):
            if scope == "program" and dimension == "program":
                continue  # one value per program
            keys = dict.fromkeys(c for c in (by, column) if c)
            branches.append(
                f"SELECT {scope}, '{dimension}', to_jsonb({column}), {_SUMS} FROM totals"
                f" GROUP BY {', '.join(keys)} HAVING sum(total) >= {minimum}"
            )
    return "\n UNION ALL\n ".join(branches)


def _hours() -> str:
    """The rows of stats_rollup_hours: per program, over all programs, per family, of each kind."""
    scopes = (("program", "program"), (f"'{ALL_PROGRAMS}'", None), (_FAMILY_SCOPE, NAME_FAMILY))
    branches = []
    for scope, by in scopes:
        for kind, column in ((PROGRAM_KIND, "program"), (FAMILY_KIND, NAME_FAMILY)):
            keys = dict.fromkeys(c for c in (by, column) if c)
            branches.append(
                f"SELECT {scope}, started_hour, '{kind}', {column}, {_SUMS} FROM hours"
                f" GROUP BY started_hour, {', '.join(keys)}"
            )
    return "\n UNION ALL\n ".join(branches)


def rollup_sql(
    patterns: Sequence[Pattern], *, leading_ctes: str, facts_from: str, jobs_source: str, rebuild: bool
) -> str:
    """One statement: count the facts of `facts_from` and add them to every rollup table (a rebuild fills emptied
    tables, keeping only the values REBUILD_MIN_VALUE_ATTEMPTS attempts have)."""
    sets = _sets()
    per_pattern = pattern_count_columns(patterns)
    unpivot = pattern_count_unpivot(patterns)
    pattern_rows = (
        f"""
        SELECT {NAME_FAMILY}, program, '{PATTERN}', to_jsonb(p.id), p.total, p.successes
        FROM pattern_counts CROSS JOIN LATERAL (VALUES {unpivot}) AS p (id, total, successes)"""
        if patterns
        else f"SELECT {NAME_FAMILY}, program, '{PATTERN}', 'null'::jsonb, 0::bigint, 0::bigint FROM pattern_counts"
        " WHERE false"
    )
    minimum = REBUILD_MIN_VALUE_ATTEMPTS if rebuild else 1
    rollup_dimension, in_rollup = _choose(sets, "rollup_dimension")
    value_dimension, _ = _choose(sets, "value_dimension")
    all_set = next(i for i, s in enumerate(sets) if s.rollup_dimension == ALL)
    hour_set = next(i for i, s in enumerate(sets) if s.hours)
    add = {
        "values": "" if rebuild else f"ON CONFLICT (scope, dimension, key) DO UPDATE {_ADD}",
        "hours": "" if rebuild else f"ON CONFLICT (scope, hour, kind, value) DO UPDATE {_ADD}",
        "families": "" if rebuild else f"ON CONFLICT ({NAME_FAMILY}, program, dimension, key) DO UPDATE {_ADD}",
        "rollup": "" if rebuild else f"ON CONFLICT (program, dimension, key) DO UPDATE {_ADD}",
    }
    return f"""
        WITH {leading_ctes}
        facts AS MATERIALIZED (
            SELECT {_fact_columns(patterns)}
            FROM {facts_from}
        ),
        {_counted(sets)},
        pattern_counts AS (
            SELECT program, {NAME_FAMILY}{per_pattern}
            FROM facts GROUP BY program, {NAME_FAMILY}
        ),
        labelled AS (
            SELECT program, {NAME_FAMILY}, {rollup_dimension} AS rollup_dimension,
                   {value_dimension} AS value_dimension, key, total, successes, grouping_set
            FROM counted WHERE grouping_set <> {hour_set}
        ),
        totals AS (SELECT program, {NAME_FAMILY}, total, successes FROM counted WHERE grouping_set = {all_set}),
        hours AS (
            SELECT program, {NAME_FAMILY}, started_hour, total, successes FROM counted WHERE grouping_set = {hour_set}
        ),
        job_counts AS ({jobs_source}),
        per_family AS MATERIALIZED (
            SELECT {NAME_FAMILY}, program, rollup_dimension AS dimension, key, total, successes
            FROM labelled WHERE {in_rollup}
            UNION ALL
            SELECT {NAME_FAMILY}, program, '{NAME_FAMILY}', to_jsonb({NAME_FAMILY}), total, successes FROM totals
            UNION ALL
            {pattern_rows}
            UNION ALL
            SELECT {NAME_FAMILY}, program, '{JOBS}', jsonb_build_object('status', status, 'retried', retried),
                   sum(jobs)::bigint, 0
            FROM job_counts GROUP BY {NAME_FAMILY}, program, status, retried
        ),
        folded_values AS (
            INSERT INTO stats_rollup_values AS r (scope, dimension, key, total, successes)
            {_values(minimum)}
            {add["values"]}
        ),
        folded_hours AS (
            INSERT INTO stats_rollup_hours AS r (scope, hour, kind, value, total, successes)
            {_hours()}
            {add["hours"]}
        ),
        folded_families AS (
            INSERT INTO stats_rollup_families AS r ({NAME_FAMILY}, program, dimension, key, total, successes)
            SELECT * FROM per_family
            {add["families"]}
        )
        INSERT INTO stats_rollup AS r (program, dimension, key, total, successes)
        SELECT program, dimension, key, {_SUMS} FROM per_family GROUP BY program, dimension, key
        {add["rollup"]}
    """


def fold_sql(patterns: Sequence[Pattern]) -> str:
    """Consume the queues and add what they hold to the rollup, in one statement (one snapshot)."""
    return rollup_sql(
        patterns,
        leading_ctes=f"""
            consumed_attempts AS (
                DELETE FROM stats_rollup_pending_attempts RETURNING attempt_id AS pending_attempt_id
            ),
            consumed_jobs AS (
                DELETE FROM stats_rollup_pending_jobs RETURNING program, {NAME_FAMILY}, status, retried, jobs
            ),
        """,
        # OFFSET 0 keeps this a lookup per queued attempt: the planner cannot turn it into a scan of all attempts
        # because of a stale estimate of the queue's size.
        facts_from="""
            consumed_attempts CROSS JOIN LATERAL (
                SELECT * FROM attempt_facts WHERE attempt_facts.attempt_id = pending_attempt_id OFFSET 0
            ) AS attempt_facts
        """,
        jobs_source=f"SELECT program, {NAME_FAMILY}, status, retried, jobs FROM consumed_jobs",
        rebuild=False,
    )


def rebuild_sql(patterns: Sequence[Pattern]) -> str:
    """Empty the queues and count every finished attempt and every job, in one statement (one snapshot)."""
    return rollup_sql(
        patterns,
        leading_ctes="""
            cleared_attempts AS (DELETE FROM stats_rollup_pending_attempts),
            cleared_jobs AS (DELETE FROM stats_rollup_pending_jobs),
            cleared_invalidations AS (DELETE FROM stats_rollup_invalidations),
        """,
        facts_from="attempt_facts",
        jobs_source=_JOBS_BY_STATUS,
        rebuild=True,
    )
