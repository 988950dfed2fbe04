"""A name prefix of /stats answered from the rollup's counts per name family instead of a scan of its attempts.

A job's name family is its name up to the first '-', '_' or digit. When a prefix has none of those, a name starts
with it exactly when the name's family does, so the attempts and jobs of the prefix are those of the families that
start with it: the sum of their rows in `stats_rollup_families` (per program, as a scan gives them), their values in
`stats_rollup_values` and their hours in `stats_rollup_hours` (scopes `family:<family>`). Another prefix, or a
prefix with a program or a window, is answered by a scan.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.rows import like_prefix
from service.stats.discovery_sql import FAMILY_SCOPE_PREFIX, READ_FAMILY_ROLLUP, RECENT_PREFIX, VALUE_PREFIX
from service.stats.filters import StatsFilters
from service.stats.query import CountRow, decode_rows

# What ends a name family (migration 0002's attempt_facts.name_family).
_ENDS_A_FAMILY = re.compile(r"[-_0-9]")

_READ_ROWS = text("""
    SELECT program, dimension, key::text AS key, sum(total) AS total, sum(successes) AS successes
    FROM stats_rollup_families
    WHERE name_family LIKE :families
    GROUP BY program, dimension, key
""")


def answered_by_family(filters: StatsFilters) -> bool:
    """Only a name prefix, and one that cannot reach past a name's family."""
    prefix = filters.name_prefix
    return (
        prefix is not None
        and filters.program is None
        and not filters.has_window
        and _ENDS_A_FAMILY.search(prefix) is None
    )


async def read_family_rollup(
    connection: AsyncConnection, name_prefix: str, recent_since: datetime
) -> tuple[list[CountRow], list[CountRow], list[CountRow]]:
    """The count rows, value rows and recent rows of the families that start with `name_prefix`, from a rollup
    brought up to date in the caller's transaction."""
    rows = await connection.execute(_READ_ROWS, {"families": like_prefix(name_prefix)})
    parameters = {"scopes": FAMILY_SCOPE_PREFIX + like_prefix(name_prefix), "recent_since": recent_since}
    discovered = decode_rows((await connection.execute(text(READ_FAMILY_ROLLUP), parameters)).all())
    values = [r for r in discovered if r.dimension.startswith(VALUE_PREFIX)]
    recent = [r for r in discovered if r.dimension.startswith(RECENT_PREFIX)]
    return decode_rows(rows.all()), values, recent
