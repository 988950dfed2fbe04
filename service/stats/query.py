"""The SQL of /stats: one statement that turns attempt facts into counts per pattern and per breakdown.

Its output has the shape of the rollup table, `(program, dimension, key, total, successes)`, whether it scans all of
`attempt_facts` (a rebuild), the attempts finished since the last fold, or a filtered window (answered directly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.stats import discovery_sql
from service.stats.filters import StatsFilters
from service.stats.patterns import Pattern


@dataclass(frozen=True, slots=True)
class Dimension:
    """A breakdown: the attempt_facts columns it groups by, and the JSON key a group is known by."""

    name: str
    columns: tuple[str, ...]
    key: str
    """SQL building a jsonb value from `columns`."""


ALL = "all"
PATTERN = "pattern"
JOBS = "jobs"
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(ALL, (), "'null'::jsonb"),
    Dimension("attempt_number", ("attempt_number",), "to_jsonb(attempt_number)"),
    Dimension(
        "outcome",
        ("outcome", "exit_code", "signal"),
        "jsonb_build_object('outcome', outcome, 'exitCode', exit_code, 'signal', signal)",
    ),
    Dimension("name_family", ("name_family",), "to_jsonb(name_family)"),
    Dimension("node", ("node_id",), "to_jsonb(node_id)"),
    Dimension("hour", ("hour_of_day",), "to_jsonb(hour_of_day)"),
    Dimension("duration_bucket", ("duration_bucket",), "to_jsonb(duration_bucket)"),
)
_FACT_COLUMNS = ("program", "succeeded", *dict.fromkeys(c for d in DIMENSIONS for c in d.columns))


@dataclass(frozen=True, slots=True)
class CountRow:
    """One row of the rollup's shape: `total` attempts (jobs, for the jobs dimension), `successes` among them."""

    program: str
    dimension: str
    key: Any
    """The decoded JSON key: None, a pattern id, an hour, {"outcome": ..., "exitCode": ..., "signal": ...}, ..."""
    total: int
    successes: int


def pattern_count_columns(patterns: Sequence[Pattern]) -> str:
    """`, count(...) AS matches_<id>, count(...) AS successes_<id>` for each pattern, over rows with `matches_<id>`."""
    return "".join(
        f",\n count(*) FILTER (WHERE matches_{p.id}) AS matches_{p.id}"
        f",\n count(*) FILTER (WHERE matches_{p.id} AND succeeded) AS successes_{p.id}"
        for p in patterns
    )


def pattern_count_unpivot(patterns: Sequence[Pattern]) -> str:
    """The VALUES list turning those columns into one (id, total, successes) row per pattern."""
    return ", ".join(f"('{p.id}', matches_{p.id}, successes_{p.id})" for p in patterns)


def counts_sql(
    patterns: Sequence[Pattern],
    *,
    facts_where: str,
    jobs_source: str,
    facts_from: str = "attempt_facts",
    leading_ctes: str = "",
    insert_into: str = "",
    on_conflict: str = "",
    discovery_ctes: str = "",
    discovery_rows: str = "",
    discovery_columns: str = "",
) -> str:
    """One statement producing count rows from the attempt_facts rows (`facts_from`) that satisfy `facts_where`.

    `jobs_source` is a SELECT of `(program, status, retried, jobs)` rows, summed into the jobs dimension. The
    patterns are FILTER aggregates of one pass over the facts; each breakdown is a GROUP BY over the same
    (materialized) facts.
    `leading_ctes` (ending with a comma), `insert_into` and `on_conflict` turn the SELECT into a fold or a rebuild.
    `discovery_columns` (leading comma), `discovery_ctes` (ending with a comma) and `discovery_rows` add the value
    counts of the findings (service/stats/discovery_sql.py) to the same pass.
    """
    flags = "".join(f",\n coalesce(({p.condition}), false) AS matches_{p.id}" for p in patterns)
    per_pattern = pattern_count_columns(patterns)
    unpivot = pattern_count_unpivot(patterns)
    pattern_rows = (
        f"""
        SELECT program, '{PATTERN}', to_jsonb(p.id), p.total, p.successes
        FROM pattern_counts CROSS JOIN LATERAL (VALUES {unpivot}) AS p (id, total, successes)
        UNION ALL"""
        if patterns
        else ""
    )
    # Every breakdown in one pass over the facts (one hash table per grouping set), not one pass each.
    dimension = " ".join(f"WHEN GROUPING({d.columns[0]}) = 0 THEN '{d.name}'" for d in DIMENSIONS if d.columns)
    key = " ".join(f"WHEN GROUPING({d.columns[0]}) = 0 THEN {d.key}" for d in DIMENSIONS if d.columns)
    grouping_sets = ", ".join(f"({', '.join(('program', *d.columns))})" for d in DIMENSIONS)
    whole = next(d.key for d in DIMENSIONS if not d.columns)
    breakdowns = f"""
        SELECT program, CASE {dimension} ELSE '{ALL}' END, coalesce(CASE {key} ELSE {whole} END, 'null'),
               count(*), count(*) FILTER (WHERE succeeded)
        FROM facts GROUP BY GROUPING SETS ({grouping_sets})"""
    return f"""
        WITH {leading_ctes}
        facts AS MATERIALIZED (
            SELECT {", ".join(_FACT_COLUMNS)}{flags}{discovery_columns}
            FROM {facts_from}
            WHERE {facts_where}
        ), {discovery_ctes}
        pattern_counts AS (
            SELECT program{per_pattern}
            FROM facts GROUP BY program
        ), job_counts AS (
            {jobs_source}
        )
        {insert_into}
        {pattern_rows}{breakdowns}
        UNION ALL
        SELECT program, '{JOBS}', jsonb_build_object('status', status, 'retried', retried), sum(jobs)::bigint, 0
        FROM job_counts GROUP BY program, status, retried
        {discovery_rows}
        {on_conflict}
    """


_JOBS_BY_STATUS = """
    SELECT program, status, attempts_count > 1 AS retried, count(*) AS jobs FROM jobs WHERE {where} GROUP BY 1, 2, 3
"""


def scan_sql(
    patterns: Sequence[Pattern],
    filters: StatsFilters,
    recent_since: datetime,
    value_sample_attempts: int | None = None,
) -> tuple[str, dict[str, object]]:
    """Count rows for a filtered request straight from attempt_facts and jobs, leaving the rollup alone.

    Besides the rollup's rows, rows of dimension `value:<name>` (the most frequent values of each dimension of the
    findings, over at most about `value_sample_attempts` (default VALUE_SAMPLE_ATTEMPTS) of the window's attempts),
    `value_sample` (how many that was) and `recent:<kind>` (attempts started from `recent_since` on, per program and
    per name family).
    """
    facts_where, parameters = filters.attempt_conditions()
    jobs_where, _ = filters.job_conditions()
    sample = discovery_sql.VALUE_SAMPLE_ATTEMPTS if value_sample_attempts is None else value_sample_attempts
    return _scan(
        patterns,
        facts_where=facts_where,
        jobs_source=_JOBS_BY_STATUS.format(where=jobs_where),
        parameters={**parameters, "recent_since": recent_since, "value_sample_attempts": sample},
    )


# A finished attempt is either counted in the rollup or still queued (a fold moves it from one to the other in one
# transaction): in one snapshot, the rollup plus the queue is every finished attempt.
_NOT_QUEUED = (
    "NOT EXISTS (SELECT FROM stats_rollup_pending_attempts AS queued"
    " WHERE queued.attempt_id = attempt_facts.attempt_id)"
)
_QUEUED_FACTS = """
    (SELECT attempt_id AS queued_id FROM stats_rollup_pending_attempts) AS queued CROSS JOIN LATERAL (
        SELECT * FROM attempt_facts WHERE attempt_facts.attempt_id = queued.queued_id OFFSET 0
    ) AS attempt_facts
"""
_NO_JOBS = "SELECT ''::text AS program, ''::text AS status, false AS retried, 0::bigint AS jobs WHERE false"


def outside_sql(
    patterns: Sequence[Pattern], filters: StatsFilters, recent_since: datetime
) -> tuple[str, dict[str, object]]:
    """The scan's rows over what a window leaves out of the rollup: the attempts of the filter's program that
    started outside the window and are counted in the rollup (not queued), the jobs created outside it, and every
    value of those attempts (not a sample: they are subtracted from the rollup's values)."""
    facts_where, parameters = filters.outside_attempt_conditions()
    jobs_where, _ = filters.outside_job_conditions()
    return _scan(
        patterns,
        facts_where=f"{facts_where} AND {_NOT_QUEUED}",
        jobs_source=_JOBS_BY_STATUS.format(where=jobs_where),
        parameters={**parameters, "recent_since": recent_since},
        every_value=True,
    )


def queued_sql(
    patterns: Sequence[Pattern], filters: StatsFilters, recent_since: datetime
) -> tuple[str, dict[str, object]]:
    """The scan's rows over the queued attempts inside the window (finished since the last fold: not in the rollup
    yet), every value counted; no jobs (the rollup's jobs plus the queued job counts are all the jobs)."""
    facts_where, parameters = filters.attempt_conditions()
    return _scan(
        patterns,
        facts_where=facts_where,
        facts_from=_QUEUED_FACTS,
        jobs_source=_NO_JOBS,
        parameters={**parameters, "recent_since": recent_since},
        every_value=True,
    )


def _scan(
    patterns: Sequence[Pattern],
    *,
    facts_where: str,
    jobs_source: str,
    parameters: dict[str, object],
    facts_from: str = "attempt_facts",
    every_value: bool = False,
) -> tuple[str, dict[str, object]]:
    counts = counts_sql(
        patterns,
        facts_where=facts_where,
        facts_from=facts_from,
        jobs_source=jobs_source,
        discovery_ctes=discovery_sql.scan_ctes(every_value=every_value),
        discovery_rows=discovery_sql.SCAN_ROWS,
        discovery_columns=discovery_sql.scan_fact_columns(),
    )
    sql = f"""
        SELECT program, dimension, key::text AS key, total, successes
        FROM ({counts}) AS counts (program, dimension, key, total, successes)
    """
    return sql, parameters


def decode_rows(rows: Sequence[Any]) -> list[CountRow]:
    """Rows of `(program, dimension, key as JSON text, total, successes)` as CountRows."""
    return [
        CountRow(
            program=row.program,
            dimension=row.dimension,
            key=json.loads(row.key),
            total=int(row.total),
            successes=int(row.successes),
        )
        for row in rows
    ]


def registry_fingerprint(patterns: Sequence[Pattern]) -> str:
    """Changes whenever what the rollup would contain changes on the Python side: the patterns or the dimensions."""
    material = json.dumps(
        {
            "patterns": [[p.id, p.condition] for p in patterns],
            "dimensions": [[d.name, d.columns, d.key] for d in DIMENSIONS],
            "values": discovery_sql.fingerprint_material(),
        }
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]
