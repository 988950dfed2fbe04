"""Parsing the /stats window and filters: what is accepted, and errors that name the query parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.stats.filters import FilterError, StatsFilters, parse_filters, parse_instant

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("30min", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:30:00Z", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
        ("2026-11-01T08:30:00+01:00", datetime(2026, 11, 1, 8, 30, tzinfo=timezone(timedelta(hours=1)))),
        ("2026-11-01T08:30", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_instants_accepted(value: str, expected: datetime) -> None:
    assert parse_instant("since", value, NOW) == expected


@pytest.mark.parametrize("value", ["yesterday", "24", "h", "-3h", "3y", "2026-13-01", "", "9" * 400 + "h", "1e9w"])
def test_bad_instants_name_the_parameter(value: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_instant("until", value, NOW)
    assert caught.value.parameter == "until"
    assert str(caught.value).startswith("until: ")


def test_since_must_be_before_until() -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters(since="1h", until="2h", program=None, name_prefix=None, now=NOW)
    assert caught.value.parameter == "since"
    assert "is not before until" in caught.value.message


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"program": ""}, "program"),
        ({"program": "x" * 4097}, "program"),
        ({"program": "/bin/\x00true"}, "program"),
        ({"name_prefix": ""}, "namePrefix"),
        ({"name_prefix": "x" * 201}, "namePrefix"),
        ({"name_prefix": "task\n"}, "namePrefix"),
    ],
)
def test_bad_filters_name_the_parameter(arguments: dict[str, str], parameter: str) -> None:
    values: dict[str, str | None] = {"since": None, "until": None, "program": None, "name_prefix": None, **arguments}
    with pytest.raises(FilterError) as caught:
        parse_filters(**values, now=NOW)
    assert caught.value.parameter == parameter


def test_only_a_window_or_a_name_prefix_needs_a_scan() -> None:
    assert not StatsFilters().needs_scan
    assert not StatsFilters(program="/bin/true").needs_scan
    assert StatsFilters(since=NOW).needs_scan
    assert StatsFilters(until=NOW).needs_scan
    assert StatsFilters(name_prefix="task").needs_scan


def test_conditions_bind_values_and_escape_like_wildcards() -> None:
    filters = StatsFilters(since=NOW, program="/bin/true", name_prefix=r"50%_off\x")

    where, parameters = filters.attempt_conditions()
    assert where == "started_at >= :since AND program = :program AND job_name LIKE :name_pattern"
    assert parameters == {"since": NOW, "program": "/bin/true", "name_pattern": r"50\%\_off\\x%"}

    jobs_where, _ = filters.job_conditions()
    assert jobs_where == "created_at >= :since AND program = :program AND name LIKE :name_pattern"
    assert StatsFilters().attempt_conditions() == ("true", {})
