"""The instants a client may give (runAt, createdAfter, since, ...): a window both Python and PostgreSQL can hold.

Python's datetime stops at year 9999 and PostgreSQL's offsets at ±15:59, and a value converted to UTC can cross
either edge (0001-01-01T00:00:00+01:00 is in 1 BC). Every instant is checked against this window before it is used,
so no stored row and no query parameter can reach a value that a read cannot decode.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_UTC_OFFSET = timedelta(hours=18)
"""The widest offset accepted (as ISO 8601 implementations commonly bound it); the instant is stored in UTC."""
WINDOW_DESCRIPTION = "1970-01-01T00:00:00Z to 9000-12-31T23:59:59Z"


def _format_offset(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def instant_problem(moment: datetime) -> str | None:
    """Why `moment` is outside the window (a phrase to follow the field's name), or None when it is inside.

    A moment without an offset is taken as UTC.
    """
    offset = moment.utcoffset() or timedelta(0)
    if abs(offset) > MAX_UTC_OFFSET:
        return f"has the UTC offset {_format_offset(offset)}; the limit is ±18:00"
    try:
        in_utc = moment.replace(tzinfo=None) - offset
    except OverflowError:
        in_utc = None  # beyond year 1 or 9999 once in UTC: outside the window either way
    if in_utc is None or not EARLIEST_INSTANT <= in_utc.replace(tzinfo=UTC) <= LATEST_INSTANT:
        return f"is outside the window {WINDOW_DESCRIPTION}"
    return None


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC (taken as UTC when it has no offset); only for a moment `instant_problem` accepted."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
