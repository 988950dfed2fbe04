"""The SQL of /stats's findings: counts per value of each dimension, per hour started, and the overlaps of findings.

The value and hour counts come out of the same pass over the facts as the rest of /stats (one GROUP BY GROUPING
SETS each): in a fold or a rebuild they go to `stats_rollup_values` and `stats_rollup_hours`, in a scan they are
answered at once. The overlaps of the strongest findings are one more bounded statement: one GROUP BY over a bitmask
of the findings each attempt matches, over the filtered attempts or a fixed-size sample of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.stats.filters import StatsFilters

ARGUMENT_POSITIONS = 3
"""Arguments 1 to this are each a dimension (whole values)."""
VALUE_MAX_CHARACTERS = 200
"""Longer values (arguments) are cut here and end in an ellipsis: they are index keys."""
TOP_VALUES = 20
"""Per dimension, only this many of the most frequent values are tested (the cost stays bounded)."""
ALL_PROGRAMS = ""
"""The `scope` of counts over every program together."""
VALUE_PREFIX, RECENT_PREFIX = "value:", "recent:"
PROGRAM_KIND, FAMILY_KIND = "program", "name_family"


@dataclass(frozen=True, slots=True)
class ValueDimension:
    name: str
    expression: str
    """SQL over attempt_facts columns giving the value (NULL is a value too: "no second argument")."""


def _argument(position: int) -> str:
    element = f"arguments[array_lower(arguments, 1) + {position - 1}]"
    return (
        f"CASE WHEN char_length({element}) > {VALUE_MAX_CHARACTERS} "
        f"THEN left({element}, {VALUE_MAX_CHARACTERS}) || '…' ELSE {element} END"
    )


VALUE_DIMENSIONS: tuple[ValueDimension, ...] = (
    *(ValueDimension(f"argument_{position}", _argument(position)) for position in range(1, ARGUMENT_POSITIONS + 1)),
    ValueDimension("name_family", "name_family"),
    ValueDimension("program", "program"),
    ValueDimension("node", "node_id"),
    ValueDimension("hour", "hour_of_day"),
    ValueDimension("weekday", "day_of_week"),
    ValueDimension("duration_bucket", "duration_bucket"),
    ValueDimension("attempt_number", "attempt_number"),
)
_BY_NAME = {dimension.name: dimension for dimension in VALUE_DIMENSIONS}
# Per program, the program dimension has one value: it is counted over all programs only.
_PER_PROGRAM = tuple(d for d in VALUE_DIMENSIONS if d.name != "program")
_STARTED_HOUR = "to_timestamp(floor(extract(epoch FROM started_at) / 3600) * 3600)"


def fact_columns() -> str:
    """Extra columns of the facts CTE (leading comma included)."""
    values = "".join(f",\n {d.expression} AS value_{d.name}" for d in VALUE_DIMENSIONS)
    return f"{values},\n started_at,\n {_STARTED_HOUR} AS started_hour"


def _key(dimensions: Sequence[ValueDimension], column: str) -> str:
    cases = " ".join(f"WHEN GROUPING(value_{d.name}) = 0 THEN {column.format(name=d.name)}" for d in dimensions)
    return f"CASE {cases} END"


def _value_counts(*, per_program: bool) -> str:
    sets = [f"(value_{d.name})" for d in VALUE_DIMENSIONS]
    if per_program:
        sets += [f"(program, value_{d.name})" for d in _PER_PROGRAM]
    scope = f"CASE WHEN GROUPING(program) = 0 THEN program ELSE '{ALL_PROGRAMS}' END" if per_program else "''"
    return f"""
        SELECT {scope} AS scope,
               {_key(VALUE_DIMENSIONS, "'{name}'")} AS dimension,
               {_key(VALUE_DIMENSIONS, "coalesce(to_jsonb(value_{name}), 'null'::jsonb)")} AS key,
               count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
        FROM facts
        GROUP BY GROUPING SETS ({", ".join(sets)})
    """


_HOUR_COUNTS = f"""
    SELECT CASE WHEN GROUPING(program) = 0 THEN program ELSE '{ALL_PROGRAMS}' END AS scope,
           started_hour AS hour,
           CASE WHEN GROUPING(value_program) = 0 THEN '{PROGRAM_KIND}' ELSE '{FAMILY_KIND}' END AS kind,
           CASE WHEN GROUPING(value_program) = 0 THEN value_program ELSE name_family END AS value,
           count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
    FROM facts
    GROUP BY GROUPING SETS ((started_hour, value_program), (program, started_hour, value_program),
                            (started_hour, name_family), (program, started_hour, name_family))
"""


def fold_ctes() -> str:
    """Data-modifying CTEs adding the facts' value and hour counts to their rollup tables (trailing comma)."""
    return f"""
        folded_values AS (
            INSERT INTO stats_rollup_values AS r (scope, dimension, key, total, successes)
            {_value_counts(per_program=True)}
            ON CONFLICT (scope, dimension, key) DO UPDATE
            SET total = r.total + excluded.total, successes = r.successes + excluded.successes
        ),
        folded_hours AS (
            INSERT INTO stats_rollup_hours AS r (scope, hour, kind, value, total, successes)
            {_HOUR_COUNTS}
            ON CONFLICT (scope, hour, kind, value) DO UPDATE
            SET total = r.total + excluded.total, successes = r.successes + excluded.successes
        ),
    """


def scan_ctes() -> str:
    """CTEs answering a scan directly: the most frequent values per dimension, and the recent window's counts."""
    return f"""
        value_counts AS ({_value_counts(per_program=False)}),
        value_top AS (
            SELECT dimension, key, total, successes FROM (
                SELECT *, row_number() OVER (PARTITION BY dimension ORDER BY total DESC, key) AS frequency_rank
                FROM value_counts
            ) AS ranked
            WHERE frequency_rank <= {TOP_VALUES}
        ),
        recent_counts AS (
            SELECT CASE WHEN GROUPING(value_program) = 0 THEN '{PROGRAM_KIND}' ELSE '{FAMILY_KIND}' END AS kind,
                   CASE WHEN GROUPING(value_program) = 0 THEN value_program ELSE name_family END AS value,
                   count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
            FROM facts
            WHERE started_at >= :recent_since
            GROUP BY GROUPING SETS ((value_program), (name_family))
        ),
    """


SCAN_ROWS = f"""
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{VALUE_PREFIX}' || dimension, key, total, successes FROM value_top
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{RECENT_PREFIX}' || kind, to_jsonb(value), total, successes FROM recent_counts
"""
"""Rows of the rollup's shape carrying the scan's value and recent counts."""

READ_ROLLUP = f"""
    SELECT '{ALL_PROGRAMS}' AS program, '{VALUE_PREFIX}' || d.dimension AS dimension, v.key::text AS key,
           v.total, v.successes
    FROM unnest(CAST(:dimensions AS text[])) AS d (dimension)
    CROSS JOIN LATERAL (
        SELECT key, total, successes FROM stats_rollup_values
        WHERE scope = :scope AND dimension = d.dimension
        ORDER BY total DESC
        LIMIT {TOP_VALUES}
    ) AS v
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{RECENT_PREFIX}' || kind, to_jsonb(value)::text, sum(total), sum(successes)
    FROM stats_rollup_hours
    WHERE scope = :scope AND hour >= :recent_since
    GROUP BY kind, value
"""
"""The most frequent values of each dimension (an index scan each) and the recent window, in one statement."""

VALUE_TABLES = ("stats_rollup_values", "stats_rollup_hours")
CLEAR_ROLLUP = tuple(f"DELETE FROM {table}" for table in VALUE_TABLES)


def read_parameters(program: str | None, recent_since: datetime) -> dict[str, object]:
    return {
        "dimensions": [d.name for d in VALUE_DIMENSIONS if program is None or d.name != "program"],
        "scope": ALL_PROGRAMS if program is None else program,
        "recent_since": recent_since,
    }


def value_condition(dimension: str, parameter: str) -> str:
    """SQL over attempt_facts: the attempt has the value bound (as JSON) to `parameter`."""
    return f"coalesce(to_jsonb({_BY_NAME[dimension].expression}), 'null'::jsonb) = CAST(:{parameter} AS jsonb)"


def overlap_sql(
    conditions: Sequence[str], filters: StatsFilters, *, sample_percent: float | None
) -> tuple[str, dict[str, object]]:
    """Finished attempts and successes per combination of `conditions` (bit i of `mask` set: condition i holds).

    With `sample_percent`, over a sample of the attempts' pages (TABLESAMPLE SYSTEM, the same sample every time
    while the table stays as it is) instead of all of them.
    """
    where, parameters = filters.attempt_conditions()
    mask = " + ".join(f"(CASE WHEN coalesce(({c}), false) THEN {1 << i} ELSE 0 END)" for i, c in enumerate(conditions))
    source = "attempt_facts"
    if sample_percent is not None:
        source = """
            (SELECT id FROM attempts TABLESAMPLE SYSTEM (:sample_percent) REPEATABLE (0)) AS sampled
            CROSS JOIN LATERAL (SELECT * FROM attempt_facts WHERE attempt_id = sampled.id OFFSET 0) AS attempt_facts
        """
        parameters = {**parameters, "sample_percent": sample_percent}
    sql = f"""
        SELECT mask, count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
        FROM (SELECT succeeded, ({mask or "0"})::bigint AS mask FROM {source} WHERE {where}) AS masked
        GROUP BY mask
    """
    return sql, parameters


def fingerprint_material() -> list[list[str]]:
    """What the value rollup depends on, for the rollup's fingerprint."""
    return [[d.name, d.expression] for d in VALUE_DIMENSIONS] + [[_STARTED_HOUR, _HOUR_COUNTS]]
