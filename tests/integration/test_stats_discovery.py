"""/stats finds the failure factor nobody registered: planted causes are found, significant and measured; a null
workload's hundreds of hypotheses stay quiet; a factor that only travels with the cause is explained by it."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats.compute import compute_stats
from service.stats.discovery_sql import ARGUMENT_POSITIONS, REBUILD_MIN_VALUE_ATTEMPTS, VALUE_MAX_CHARACTERS
from service.stats.filters import StatsFilters
from service.stats.findings import Finding, FindingKind
from service.stats.overlap import count_overlaps
from service.stats.report import StatsReport
from tests.support.discovery_history import Attempt, insert_attempts, spread
from tests.support.stats_history import use_utc

ATTEMPTS = 2000
RATE_TOLERANCE = 0.05
FAILING_RATE, HEALTHY_RATE = 0.3, 0.8
WORDS = (
    *("alpha", "bravo", "carbon", "delta", "echo", "fox", "golf", "hotel", "india", "juliet"),
    *("kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"),
)
ARGUMENTS = (
    ("run", "check", "sync", "list", "push", "pull", "scan", "test"),
    ("--full", "--quick", "--dry", "--all", "--eu", "--us", "--fast", "--slow"),
    ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "g.txt", "h.txt"),
)
NOW = datetime.now(UTC)
HISTORY_DAYS = 5


def draw(generator: random.Random, *, values: int = 4, now: datetime = NOW) -> Attempt:
    """An attempt whose characteristics are all drawn independently (its outcome is decided later)."""
    words = WORDS[:values]
    return Attempt(
        name=f"{generator.choice(words)}-{generator.randrange(1000)}",
        started_at=spread(now - timedelta(days=HISTORY_DAYS), now - timedelta(minutes=1), generator.random()),
        succeeded=True,
        arguments=[generator.choice(choices[: min(values, len(choices))]) for choices in ARGUMENTS][
            : generator.randint(1, len(ARGUMENTS))
        ],
        node=f"node-{generator.randrange(values)}",
        program=f"/opt/jobs/{generator.choice(words[:3])}.py",
        attempt_number=generator.randint(1, 2),
        duration_ms=generator.choice((50, 500, 5000)),
    )


Modify = Callable[[Attempt, random.Random], Attempt]


async def planted(
    engine: AsyncEngine, seed: int, failing: Callable[[Attempt], bool], *, modify: Modify | None = None
) -> tuple[list[Attempt], StatsReport]:
    await use_utc(engine)
    generator = random.Random(seed)
    attempts = []
    for _ in range(ATTEMPTS):
        attempt = draw(generator)
        if modify is not None:
            attempt = modify(attempt, generator)
        rate = FAILING_RATE if failing(attempt) else HEALTHY_RATE
        attempts.append(dataclasses.replace(attempt, succeeded=generator.random() < rate))
    await insert_attempts(engine, attempts)
    return attempts, await compute_stats(engine, now=NOW)


def findings_of(report: StatsReport) -> list[Finding]:
    assert report.discovery is not None
    return report.discovery.findings


def assert_found_first(
    report: StatsReport, description: str, attempts: list[Attempt], cause: Callable[[Attempt], bool]
) -> None:
    findings = findings_of(report)
    first = findings[0]
    described = [first.description, *first.same_attempts]
    assert description in described, [(f.description, f.significant, f.strength) for f in findings[:5]]
    assert first.significant
    assert first.match_count == sum(cause(a) for a in attempts)
    assert first.success_rate == pytest.approx(FAILING_RATE, abs=RATE_TOLERANCE)
    assert first.success_rate_others == pytest.approx(HEALTHY_RATE, abs=RATE_TOLERANCE)
    assert report.discovery is not None
    assert report.discovery.summary[1].startswith(first.description)


async def test_a_value_of_one_argument_position_is_found(engine: AsyncEngine) -> None:
    def cause(a: Attempt) -> bool:
        return len(a.arguments) > 1 and a.arguments[1] == "--full"

    attempts, report = await planted(engine, 11, cause)
    assert_found_first(report, "Argument 2 is '--full'", attempts, cause)


async def test_one_node_is_found(engine: AsyncEngine) -> None:
    def cause(a: Attempt) -> bool:
        return a.node == "node-3"

    attempts, report = await planted(engine, 12, cause)
    assert_found_first(report, "Ran on node 'node-3'", attempts, cause)


async def test_one_name_family_is_found(engine: AsyncEngine) -> None:
    def cause(a: Attempt) -> bool:
        return a.family == "bravo"

    attempts, report = await planted(engine, 13, cause)
    assert_found_first(report, "Name family is 'bravo'", attempts, cause)


async def test_a_change_at_a_known_time_is_found(engine: AsyncEngine) -> None:
    program = "/opt/jobs/alpha.py"
    since = NOW - timedelta(hours=24)
    recent_share = 0.3

    def recent_for_some(a: Attempt, generator: random.Random) -> Attempt:
        # A share of the attempts in the last day, so that the window holds a few hundred of them.
        if generator.random() < recent_share:
            return dataclasses.replace(a, started_at=since + (NOW - a.started_at) / HISTORY_DAYS)
        return a

    def cause(a: Attempt) -> bool:
        return a.program == program and a.started_at >= since

    attempts, report = await planted(engine, 14, cause, modify=recent_for_some)

    change = next(f for f in findings_of(report) if f.kind is FindingKind.CHANGE and f.value == program)
    assert change.description == f"Program {program} in the last 24 h"
    assert change.significant
    # From the rollup, the window starts at the whole hour before: it may hold a few attempts more.
    assert report.discovery is not None
    window_start = report.discovery.recent_since
    assert since - timedelta(hours=1) < window_start <= since
    assert change.match_count == sum(a.program == program and a.started_at >= window_start for a in attempts)
    assert change.success_rate == pytest.approx(FAILING_RATE, abs=RATE_TOLERANCE)
    assert change.success_rate_others == pytest.approx(HEALTHY_RATE, abs=RATE_TOLERANCE)
    assert report.discovery is not None
    assert any(line.startswith(f"Program {program} in the last 24 h: ") for line in report.discovery.summary)


async def test_a_factor_that_only_travels_with_the_cause_is_explained_by_it(engine: AsyncEngine) -> None:
    """Node 'node-1' gets mostly 'sync' jobs, which are what fails: the node is explained by the argument."""

    def crowd_node(a: Attempt, generator: random.Random) -> Attempt:
        on_node = generator.random() < (0.7 if a.arguments[0] == "sync" else 0.25)
        return dataclasses.replace(a, node="node-1" if on_node else "node-2")

    def cause(a: Attempt) -> bool:
        return a.arguments[0] == "sync"

    attempts, report = await planted(engine, 15, cause, modify=crowd_node)

    assert_found_first(report, "Argument 1 is 'sync'", attempts, cause)
    node = next(f for f in findings_of(report) if f.description in ("Ran on node 'node-1'", "Ran on node 'node-2'"))
    assert node.rejected  # on its own it goes with failure ...
    assert not node.significant  # ... but only through the argument
    assert node.explained_by == findings_of(report)[0].description
    assert node.stratified_p_value is not None
    assert node.stratified_p_value > 0.05


NULL_RUNS = 20
NULL_ATTEMPTS = 3000


async def test_a_workload_without_a_factor_shows_nothing_significant(engine: AsyncEngine) -> None:
    """Twenty histories, each of a name prefix of its own, none with a factor: at most 5 % of them show one."""
    await use_utc(engine)
    prefixes = [f"n{chr(ord('a') + run)}" for run in range(NULL_RUNS)]
    attempts = []
    for run, prefix in enumerate(prefixes):
        generator = random.Random(100 + run)
        for _ in range(NULL_ATTEMPTS):
            attempt = draw(generator, values=len(WORDS))
            attempts.append(
                dataclasses.replace(attempt, name=prefix + attempt.name, succeeded=generator.random() < 0.6)
            )
    await insert_attempts(engine, attempts)

    runs_with_a_finding = []
    tested = []
    for prefix in prefixes:
        report = await compute_stats(engine, StatsFilters(name_prefix=prefix), now=NOW)
        assert report.discovery is not None
        tested.append(report.discovery.hypotheses_tested)
        significant = [f.description for f in report.discovery.findings if f.significant]
        if significant:
            runs_with_a_finding.append((prefix, significant))
    assert min(tested) >= 130, tested
    assert len(runs_with_a_finding) <= NULL_RUNS * 0.05, runs_with_a_finding


def _duration_bucket(milliseconds: int) -> str:
    for limit, bucket in ((100, "up to 100 ms"), (1000, "up to 1 s"), (10000, "up to 10 s"), (60000, "up to 1 min")):
        if milliseconds <= limit:
            return bucket
    return "up to 10 min" if milliseconds <= 600000 else "over 10 min"


def recount(attempts: list[Attempt]) -> Counter[tuple[str, str, object, int, int]]:
    """(scope, dimension, value, total, successes), counted in Python from the rows as they were written."""
    cells: dict[tuple[str, str, object], list[int]] = defaultdict(lambda: [0, 0])
    for a in attempts:
        values: dict[str, object] = {
            **{
                f"argument_{k}": (
                    None
                    if len(a.arguments) < k
                    else a.arguments[k - 1]
                    if len(a.arguments[k - 1]) <= VALUE_MAX_CHARACTERS
                    else a.arguments[k - 1][:VALUE_MAX_CHARACTERS] + "…"
                )
                for k in range(1, ARGUMENT_POSITIONS + 1)
            },
            "name_family": a.family,
            "program": a.program,
            "node": a.node,
            "hour": a.started_at.hour,
            "weekday": a.started_at.isoweekday(),
            "duration_bucket": _duration_bucket(a.duration_ms),
            "attempt_number": a.attempt_number,
        }
        for dimension, value in values.items():
            for scope in ("", a.program, f"family:{a.family}"):
                if scope == a.program and dimension == "program":
                    continue
                cell = cells[(scope, dimension, json.dumps(value))]
                cell[0] += 1
                cell[1] += a.succeeded
    # A rebuild (what builds the rollup here) keeps only the values at least REBUILD_MIN_VALUE_ATTEMPTS attempts have.
    return Counter((scope, d, v, t, s) for (scope, d, v), (t, s) in cells.items() if t >= REBUILD_MIN_VALUE_ATTEMPTS)


async def test_the_sql_counts_equal_a_python_recount(engine: AsyncEngine) -> None:
    await use_utc(engine)
    generator = random.Random(21)
    attempts = []
    for index in range(600):
        attempt = draw(generator, values=6)
        if index % 50 == 0:  # an argument longer than an index key takes: cut, with an ellipsis
            attempt = dataclasses.replace(attempt, arguments=["x" * 300 + str(index % 3), "--full"])
        attempts.append(dataclasses.replace(attempt, succeeded=generator.random() < 0.5))
    await insert_attempts(engine, attempts)
    report = await compute_stats(engine, now=NOW)  # builds the rollup

    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT scope, dimension, key::text, total, successes FROM stats_rollup_values")
            )
        ).all()
        hours = (
            await connection.execute(text("SELECT scope, hour, kind, value, total, successes FROM stats_rollup_hours"))
        ).all()
    assert Counter((r[0], r[1], json.dumps(json.loads(r[2])), r[3], r[4]) for r in stored) == recount(attempts)

    expected_hours: dict[tuple[str, datetime, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for a in attempts:
        hour = a.started_at.replace(minute=0, second=0, microsecond=0)
        for scope in ("", a.program, f"family:{a.family}"):
            for kind, value in (("program", a.program), ("name_family", a.family)):
                cell = expected_hours[(scope, hour, kind, value)]
                cell[0] += 1
                cell[1] += a.succeeded
    assert {(r[0], r[1], r[2], r[3]): [r[4], r[5]] for r in hours} == dict(expected_hours)

    # A scan (here: every attempt since long ago) tests the same values with the same counts as the rollup.
    scanned = await compute_stats(engine, StatsFilters(since=NOW - timedelta(days=365)), now=NOW)
    assert scanned.discovery is not None
    assert report.discovery is not None
    by_id = {f.id: (f.match_count, f.success_count) for f in scanned.discovery.findings if f.kind is FindingKind.VALUE}
    for finding in report.discovery.findings:
        if finding.kind is FindingKind.VALUE and finding.id in by_id:
            assert by_id[finding.id] == (finding.match_count, finding.success_count)

    # The overlap counts of two findings, against the same recount.
    family = next(f for f in report.discovery.findings if f.dimension == "name_family")
    node = next(f for f in report.discovery.findings if f.dimension == "node")
    async with engine.connect() as connection:
        overlaps = await count_overlaps(connection, [family, node], StatsFilters(), len(attempts))
    both = [a for a in attempts if a.family == family.value and a.node == node.value]
    assert overlaps.count(0b11) == (len(both), sum(a.succeeded for a in both))
    assert overlaps.attempts == len(attempts)
