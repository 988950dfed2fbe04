"""The pattern registry. Adding a pattern is adding one entry here; nothing else changes.

Each condition is a SQL boolean expression over one row of the `attempt_facts` view (see the migration). They are
constants written by us, never built from user input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pattern:
    id: str
    """A stable identifier, safe to use as a SQL column alias."""
    description: str
    """The sentence shown as `pattern` in /stats (the Node.js service's wording where it had one)."""
    condition: str
    """SQL boolean expression over `attempt_facts` columns."""


PATTERNS: tuple[Pattern, ...] = (
    Pattern("long_name", "Job name length > 10", "name_length > 10"),
    Pattern("name_has_digits", "Job name contains digits", "name_has_digits"),
    Pattern("two_or_more_arguments", "Argument count >= 2", "argument_count >= 2"),
    Pattern("long_running", "Job execution time > 1 second", "duration_ms > 1000"),
    Pattern("retry_attempt", "Retry attempts", "attempt_number > 1"),
)
