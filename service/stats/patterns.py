"""The pattern registry. Adding a pattern is adding one entry here; nothing else changes.

Each condition is a SQL boolean expression over one row of the `attempt_facts` view (see the migrations). They are
constants written by us, never built from user input. A condition that is NULL for an attempt (an unknown duration,
say) does not match it. The /stats rollup counts each attempt once, when it finishes, and rebuilds itself when this
registry changes: a condition may use any column of attempt_facts (all of them are fixed once the attempt ended), but
nothing that changes later, such as the job's current status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    id: str
    """A stable identifier: lower case, digits and underscores (it is shown as `id` in /stats and kept in SQL)."""
    description: str
    """The sentence shown as `pattern` in /stats (the Node.js service's wording where it had one)."""
    condition: str
    """SQL boolean expression over `attempt_facts` columns."""

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.id):
            raise ValueError(f"pattern id {self.id!r} must match {_IDENTIFIER.pattern}")


PATTERNS: tuple[Pattern, ...] = (
    Pattern("long_name", "Job name length > 10", "name_length > 10"),
    Pattern("name_has_digits", "Job name contains digits", "name_has_digits"),
    Pattern("two_or_more_arguments", "Argument count >= 2", "argument_count >= 2"),
    Pattern("long_running", "Job execution time > 1 second", "duration_ms > 1000"),
    Pattern("retry_attempt", "Retry attempts", "attempt_number > 1"),
    Pattern("three_or_more_arguments", "Argument count >= 3", "argument_count >= 3"),
    Pattern("long_argument", "Any argument longer than 100 characters", "max_argument_length > 100"),
    Pattern(
        "outside_office_hours", "Started outside 08:00-18:00 (server time)", "hour_of_day < 8 OR hour_of_day >= 18"
    ),
    Pattern("weekend", "Started on a Saturday or Sunday (server time)", "day_of_week >= 6"),
    Pattern("no_arguments", "No arguments", "argument_count = 0"),
    Pattern("ended_quickly", "Ended within 100 ms", "duration_ms <= 100"),
)
