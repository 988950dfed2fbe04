"""The window and filters of /stats (`since`, `until`, `program`, `namePrefix`): parsing, validation, and their SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from service.db.rows import like_prefix
from service.domain.timestamps import instant_problem

MAX_PROGRAM_LENGTH = 4096
MAX_NAME_PREFIX_LENGTH = 200  # a job name is at most this long, so a longer prefix could match nothing
_RELATIVE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
# As in a job name: C0 and C1 controls, DEL, and the bidirectional overrides and isolates.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class FilterError(ValueError):
    """A filter value that cannot be used; `parameter` is the query parameter's name as the user wrote it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True, slots=True)
class StatsFilters:
    since: datetime | None = None
    """Attempts that started at or after this instant (and jobs created at or after it)."""
    until: datetime | None = None
    """Attempts that started before this instant (and jobs created before it)."""
    program: str | None = None
    name_prefix: str | None = None

    @property
    def needs_scan(self) -> bool:
        """The rollup is kept per program only: a window or a name prefix is answered by scanning attempt_facts."""
        return self.since is not None or self.until is not None or self.name_prefix is not None

    def attempt_conditions(self) -> tuple[str, dict[str, object]]:
        """A WHERE clause over attempt_facts and its bound parameters ("true" when nothing is filtered)."""
        return self._conditions(time_column="started_at", name_column="job_name")

    def job_conditions(self) -> tuple[str, dict[str, object]]:
        """The same filters over jobs: a job is in the window when it was created in it."""
        return self._conditions(time_column="created_at", name_column="name")

    @property
    def has_window(self) -> bool:
        return self.since is not None or self.until is not None

    def outside_attempt_conditions(self) -> tuple[str, dict[str, object]]:
        """The attempts of the filter's program (if any) that started outside its window."""
        return self._conditions(time_column="started_at", name_column="job_name", outside=True)

    def outside_job_conditions(self) -> tuple[str, dict[str, object]]:
        """The jobs of the filter's program (if any) created outside its window."""
        return self._conditions(time_column="created_at", name_column="name", outside=True)

    def _conditions(
        self, *, time_column: str, name_column: str, outside: bool = False
    ) -> tuple[str, dict[str, object]]:
        clauses: list[str] = []
        parameters: dict[str, object] = {}
        window: list[str] = []
        if self.since is not None:
            window.append(f"{time_column} >= :since")
            parameters["since"] = self.since
        if self.until is not None:
            window.append(f"{time_column} < :until")
            parameters["until"] = self.until
        if outside:
            # Both columns are NOT NULL: the complement of the window is exactly its negation.
            clauses.append(f"NOT ({' AND '.join(window) or 'true'})")
        else:
            clauses.extend(window)
        if self.program is not None:
            clauses.append("program = :program")
            parameters["program"] = self.program
        if self.name_prefix is not None:
            clauses.append(f"{name_column} LIKE :name_pattern")
            parameters["name_pattern"] = like_prefix(self.name_prefix)
        return " AND ".join(clauses) or "true", parameters


def parse_instant(parameter: str, value: str, now: datetime) -> datetime:
    """ISO 8601 (`2026-11-28T08:00:00+01:00`, `2026-11-28`; UTC when no offset is given) or a time ago (`24h`)."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative.group("amount")) * _UNIT_SECONDS[relative.group("unit")]
        try:
            parsed = now - timedelta(seconds=seconds)
        except OverflowError:
            raise FilterError(parameter, f"{value!r} reaches back before year 1") from None
        return _within_window(parameter, value, parsed)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), time())
        except ValueError:
            raise FilterError(
                parameter,
                f"{value!r} is neither an ISO 8601 date or time (2026-11-28T08:00:00Z) "
                "nor a time ago (30m, 24h, 7d, 2w)",
            ) from None
    return _within_window(parameter, value, parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC))


def _within_window(parameter: str, value: str, moment: datetime) -> datetime:
    """Only an instant PostgreSQL and Python both hold may reach a query (9999-12-31T23:59:59-05:00 is not one)."""
    problem = instant_problem(moment)
    if problem:
        raise FilterError(parameter, f"{value!r} {problem}")
    return moment


def parse_filters(
    *,
    since: str | None,
    until: str | None,
    program: str | None,
    name_prefix: str | None,
    now: datetime | None = None,
) -> StatsFilters:
    """Check every filter of a /stats request; a bad one raises FilterError naming its query parameter."""
    moment = now or datetime.now(UTC)
    since_at = parse_instant("since", since, moment) if since is not None else None
    until_at = parse_instant("until", until, moment) if until is not None else None
    if since_at is not None and until_at is not None and since_at >= until_at:
        raise FilterError("since", f"{since_at.isoformat()} is not before until ({until_at.isoformat()})")
    if program is not None:
        if not program or len(program) > MAX_PROGRAM_LENGTH:
            raise FilterError("program", f"must be 1-{MAX_PROGRAM_LENGTH} characters; it is {len(program)}")
        if "\x00" in program:
            raise FilterError("program", "must not contain NUL")
    if name_prefix is not None:
        if not name_prefix or len(name_prefix) > MAX_NAME_PREFIX_LENGTH:
            raise FilterError("namePrefix", f"must be 1-{MAX_NAME_PREFIX_LENGTH} characters; it is {len(name_prefix)}")
        if _CONTROL_CHARACTERS.search(name_prefix):
            raise FilterError("namePrefix", "must not contain control characters (job names have none)")
    return StatsFilters(since=since_at, until=until_at, program=program, name_prefix=name_prefix)


MAX_RECENT = timedelta(days=365)


def parse_recent(value: str) -> timedelta:
    """The `recent` window of the change findings: a duration such as `24h`, `90min`, `7d`."""
    relative = _RELATIVE.match(value.strip())
    if not relative:
        raise FilterError("recent", f"{value!r} is not a duration (30m, 24h, 7d, 2w)")
    seconds = float(relative.group("amount")) * _UNIT_SECONDS[relative.group("unit")]
    if not 0 < seconds <= MAX_RECENT.total_seconds():
        raise FilterError("recent", f"{value!r} must be more than 0 and at most {MAX_RECENT.days} days")
    return timedelta(seconds=seconds)
