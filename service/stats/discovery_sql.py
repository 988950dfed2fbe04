"""The SQL of /stats's findings: counts per value of each dimension, per hour started, and the overlaps of findings.

The value and hour counts come out of the same pass over the facts as the rest of /stats: in a fold or a rebuild
(service/stats/rollup_sql.py) they go to `stats_rollup_values` and `stats_rollup_hours` (counted per program; the
counts over all programs are the sums of those), in a scan they are answered at once (one GROUP BY GROUPING SETS),
over a bounded sample of the window's attempts when it is large. The overlaps of the strongest findings are one
more bounded statement: one GROUP BY over a bitmask of the findings each attempt matches, over the filtered
attempts or a fixed-size sample.
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
SAMPLE_DIMENSION = "value_sample"
"""The scan row carrying the attempts (and successes) its value counts are over: all of the window's, or a sample."""
VALUE_SAMPLE_ATTEMPTS = 50_000
"""A scan counts the values of at most about this many of the window's attempts (a fixed hash of their ids picks
them, so the same window gives the same sample); the recent-window counts and everything else stay exact."""
_HASH_RANGE = 2**32
# hashint8 spreads ids uniformly over int4; shifted to 0 .. 2^32 - 1, "bucket < share * 2^32" keeps that share.
_SAMPLE_BUCKET = "(hashint8(attempt_id)::bigint + 2147483648)"


@dataclass(frozen=True, slots=True)
class ValueDimension:
    name: str
    expression: str
    """SQL over attempt_facts columns giving the value (NULL is a value too: "no second argument")."""
    fact_column: bool = False
    """`expression` is a column the facts CTE has anyway: grouped by as it is, not copied (a rebuild copies every
    attempt's columns once more)."""

    @property
    def column(self) -> str:
        return self.expression if self.fact_column else f"value_{self.name}"


def _argument(position: int) -> str:
    element = f"arguments[array_lower(arguments, 1) + {position - 1}]"
    return (
        f"CASE WHEN char_length({element}) > {VALUE_MAX_CHARACTERS} "
        f"THEN left({element}, {VALUE_MAX_CHARACTERS}) || '…' ELSE {element} END"
    )


VALUE_DIMENSIONS: tuple[ValueDimension, ...] = (
    *(ValueDimension(f"argument_{position}", _argument(position)) for position in range(1, ARGUMENT_POSITIONS + 1)),
    ValueDimension("name_family", "name_family", fact_column=True),
    # A copy: grouped by next to `program` itself (per program), GROUPING() could not tell the two apart.
    ValueDimension("program", "program"),
    ValueDimension("node", "node_id", fact_column=True),
    ValueDimension("hour", "hour_of_day", fact_column=True),
    ValueDimension("weekday", "day_of_week"),
    ValueDimension("duration_bucket", "duration_bucket", fact_column=True),
    ValueDimension("attempt_number", "attempt_number", fact_column=True),
)
_BY_NAME = {dimension.name: dimension for dimension in VALUE_DIMENSIONS}
# The whole UTC hour (date_bin's integer arithmetic, not extract's numeric: this runs for every attempt of a rebuild).
STARTED_HOUR = "date_bin('1 hour', started_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def fact_columns() -> str:
    """Extra columns of the facts CTE of a fold or a rebuild (leading comma included)."""
    values = "".join(f",\n {d.expression} AS {d.column}" for d in VALUE_DIMENSIONS if not d.fact_column)
    return f"{values},\n started_at,\n {STARTED_HOUR} AS started_hour"


def scan_fact_columns() -> str:
    """Extra columns of a scan's facts CTE: what the value sample and the recent window are computed from (the
    values themselves are computed for the sampled attempts only)."""
    return f",\n arguments,\n day_of_week,\n started_at,\n {_SAMPLE_BUCKET} AS sample_bucket"


def _key(dimensions: Sequence[ValueDimension], column: str) -> str:
    cases = " ".join(
        f"WHEN GROUPING({d.column}) = 0 THEN {column.format(name=d.name, column=d.column)}" for d in dimensions
    )
    return f"CASE {cases} END"


_DIMENSION = _key(VALUE_DIMENSIONS, "'{name}'")
_VALUE_KEY = _key(VALUE_DIMENSIONS, "coalesce(to_jsonb({column}), 'null'::jsonb)")
_COUNTS = "count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes"

REBUILD_MIN_VALUE_ATTEMPTS = 2
"""A rebuild stores the values that at least this many attempts have: arguments unique to one job (a file name, an
id) are most of the distinct values and could never be tested. Folds store every value they meet, so a value that
becomes frequent later may be short of at most this many minus one attempts, against the hundreds it needs."""


_VALUE_COUNTS_OF_SAMPLE = f"""
    SELECT {_DIMENSION} AS dimension, {_VALUE_KEY} AS key, {_COUNTS}
    FROM value_facts
    GROUP BY GROUPING SETS ({", ".join(f"({d.column})" for d in VALUE_DIMENSIONS)})
"""


def scan_ctes(*, every_value: bool = False) -> str:
    """CTEs answering a scan directly: the most frequent values per dimension (over the value sample), the sample's
    size, and the recent window's counts (over every attempt of the window). With `every_value`, every value of
    every attempt instead (the attempts outside a window, subtracted from the rollup's values)."""
    values = "".join(
        f",\n {d.column}" if d.fact_column else f",\n {d.expression} AS {d.column}" for d in VALUE_DIMENSIONS
    )
    sample = (
        ""
        if every_value
        else f"WHERE sample_bucket < {_HASH_RANGE}.0 * :value_sample_attempts"
        " / greatest((SELECT count(*) FROM facts), 1)"
    )
    top = (
        "SELECT dimension, key, total, successes FROM value_counts"
        if every_value
        else f"""
            SELECT dimension, key, total, successes FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY dimension ORDER BY total DESC, key::text COLLATE "C"
                ) AS frequency_rank
                FROM value_counts
            ) AS ranked
            WHERE frequency_rank <= {TOP_VALUES}
        """
    )
    return f"""
        value_facts AS MATERIALIZED (
            SELECT succeeded{values}
            FROM facts
            {sample}
        ),
        value_sample AS (SELECT {_COUNTS} FROM value_facts),
        value_counts AS ({_VALUE_COUNTS_OF_SAMPLE}),
        value_top AS ({top}),
        recent_counts AS (
            SELECT CASE WHEN GROUPING(program) = 0 THEN '{PROGRAM_KIND}' ELSE '{FAMILY_KIND}' END AS kind,
                   CASE WHEN GROUPING(program) = 0 THEN program ELSE name_family END AS value,
                   {_COUNTS}
            FROM facts
            WHERE started_at >= :recent_since
            GROUP BY GROUPING SETS ((program), (name_family))
        ),
    """


SCAN_ROWS = f"""
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{VALUE_PREFIX}' || dimension, key, total, successes FROM value_top
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{RECENT_PREFIX}' || kind, to_jsonb(value), total, successes FROM recent_counts
    UNION ALL
    SELECT '{ALL_PROGRAMS}', '{SAMPLE_DIMENSION}', 'null'::jsonb, total, successes FROM value_sample
"""
"""Rows of the rollup's shape carrying the scan's value counts, the size of their sample and the recent counts."""


def _read_rollup(values: str) -> str:
    return f"""
        SELECT '{ALL_PROGRAMS}' AS program, '{VALUE_PREFIX}' || d.dimension AS dimension, v.key::text AS key,
               v.total, v.successes
        FROM unnest(CAST(:dimensions AS text[])) AS d (dimension)
        CROSS JOIN LATERAL (
            SELECT key, total, successes FROM stats_rollup_values
            WHERE scope = :scope AND dimension = d.dimension
            {values}
        ) AS v
        UNION ALL
        SELECT '{ALL_PROGRAMS}', '{RECENT_PREFIX}' || kind, to_jsonb(value)::text, sum(total), sum(successes)
        FROM stats_rollup_hours
        WHERE scope = :scope AND hour >= :recent_since
        GROUP BY kind, value
    """


READ_ROLLUP = _read_rollup(f"ORDER BY total DESC LIMIT {TOP_VALUES}")
"""The most frequent values of each dimension (an index scan each) and the recent window, in one statement."""
READ_ROLLUP_FREQUENT = _read_rollup("AND total >= :minimum")
"""The same with every value at least `minimum` attempts have: once the attempts outside a window are subtracted,
the window's most frequent values may be others than the rollup's."""

VALUE_TABLES = ("stats_rollup_values", "stats_rollup_hours")
OVERLAP_TABLE = "stats_rollup_overlaps"
CLEAR_ROLLUP = tuple(f"DELETE FROM {table}" for table in (*VALUE_TABLES, OVERLAP_TABLE))


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
    conditions: Sequence[str], filters: StatsFilters, *, sample_share: float | None, sample_pages: bool
) -> tuple[str, dict[str, object]]:
    """Finished attempts and successes per combination of `conditions` (bit i of `mask` set: condition i holds).

    With `sample_share`, over that share of the filtered attempts: with `sample_pages`, of the table's pages
    (TABLESAMPLE SYSTEM, the same pages while the table stays as it is: cheap when the filter keeps most attempts),
    else the attempts a fixed hash of their id picks (the filtered attempts are read, the conditions evaluated on
    the sample only).
    """
    where, parameters = filters.attempt_conditions()
    mask = " + ".join(f"(CASE WHEN coalesce(({c}), false) THEN {1 << i} ELSE 0 END)" for i, c in enumerate(conditions))
    source = "attempt_facts"
    if sample_share is not None and sample_pages:
        source = """
            (SELECT id FROM attempts TABLESAMPLE SYSTEM (:sample_percent) REPEATABLE (0)) AS sampled
            CROSS JOIN LATERAL (SELECT * FROM attempt_facts WHERE attempt_id = sampled.id OFFSET 0) AS attempt_facts
        """
        parameters = {**parameters, "sample_percent": 100.0 * sample_share}
    elif sample_share is not None:
        where = f"{where} AND {_SAMPLE_BUCKET} < :sample_buckets"
        parameters = {**parameters, "sample_buckets": int(sample_share * _HASH_RANGE)}
    sql = f"""
        SELECT mask, count(*) AS total, count(*) FILTER (WHERE succeeded) AS successes
        FROM (SELECT succeeded, ({mask or "0"})::bigint AS mask FROM {source} WHERE {where}) AS masked
        GROUP BY mask
    """
    return sql, parameters


def fingerprint_material() -> list[list[str]]:
    """What the value rollup depends on, for the rollup's fingerprint."""
    return [[d.name, d.expression] for d in VALUE_DIMENSIONS] + [[STARTED_HOUR, PROGRAM_KIND, FAMILY_KIND]]
