"""What /stats samples to stay fast at a million attempts, and says it samples: the values of a large window (the
planted cause is still found, every other figure stays exact), and the rollup's overlap counts (reused while the
attempts grow by less than 1 %, counted again beyond)."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.stats import discovery_sql, overlap
from service.stats.compute import compute_stats
from service.stats.discovery_sql import SAMPLE_DIMENSION, VALUE_PREFIX
from service.stats.filters import StatsFilters
from service.stats.rollup import scan_counts
from tests.integration.test_stats_discovery import ATTEMPTS, FAILING_RATE, HEALTHY_RATE, NOW, draw, planted
from tests.support.discovery_history import Attempt, insert_attempts

SAMPLE_ATTEMPTS = 1000
# The hash keeps each attempt with probability 1/2 here: the sample's size is binomial, sd about 22.
SAMPLE_SIZE_TOLERANCE = 120
WHOLE_HISTORY = StatsFilters(since=NOW - timedelta(days=365))


def _second_argument_is_full(a: Attempt) -> bool:
    return len(a.arguments) > 1 and a.arguments[1] == "--full"


async def test_a_large_windows_values_are_a_sample_that_still_finds_the_cause(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts, exact = await planted(engine, 11, _second_argument_is_full)
    monkeypatch.setattr(discovery_sql, "VALUE_SAMPLE_ATTEMPTS", SAMPLE_ATTEMPTS)

    report = await compute_stats(engine, WHOLE_HISTORY, now=NOW)

    assert report.discovery is not None
    assert report.discovery.value_sampled
    assert abs(report.discovery.value_attempts - SAMPLE_ATTEMPTS) <= SAMPLE_SIZE_TOLERANCE
    # Everything but the values is still counted over every attempt of the window.
    assert report.finished_attempts == exact.finished_attempts == ATTEMPTS
    assert [(p.pattern.id, p.match_count) for p in report.patterns] == [
        (p.pattern.id, p.match_count) for p in exact.patterns
    ]
    first = report.discovery.findings[0]
    assert first.description == "Argument 2 is '--full'"
    assert first.significant
    assert first.match_count < sum(_second_argument_is_full(a) for a in attempts)
    assert first.match_count + first.others_count == report.discovery.value_attempts
    assert first.success_rate == pytest.approx(FAILING_RATE, abs=0.08)
    assert first.success_rate_others == pytest.approx(HEALTHY_RATE, abs=0.08)

    # Every value of a dimension with few values is counted: together they are the whole sample.
    async with engine.connect() as connection:
        rows = await scan_counts(connection, [], WHOLE_HISTORY, NOW - timedelta(hours=24))
    (sample,) = [r for r in rows if r.dimension == SAMPLE_DIMENSION]
    nodes = [r for r in rows if r.dimension == f"{VALUE_PREFIX}node"]
    assert sum(r.total for r in nodes) == sample.total == report.discovery.value_attempts
    assert sum(r.successes for r in nodes) == sample.successes


async def test_a_small_window_counts_every_value(engine: AsyncEngine) -> None:
    await planted(engine, 11, _second_argument_is_full)
    report = await compute_stats(engine, WHOLE_HISTORY, now=NOW)
    assert report.discovery is not None
    assert not report.discovery.value_sampled
    assert report.discovery.value_attempts == ATTEMPTS


async def _more(engine: AsyncEngine, count: int, seed: int) -> None:
    generator = random.Random(seed)
    extra = [dataclasses.replace(draw(generator), succeeded=generator.random() < HEALTHY_RATE) for _ in range(count)]
    await insert_attempts(engine, extra)


async def test_the_rollups_sampled_overlaps_are_reused_until_the_attempts_grow_by_one_percent(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overlap, "OVERLAP_EXACT_MAX_ATTEMPTS", ATTEMPTS // 4)
    monkeypatch.setattr(overlap, "OVERLAP_SAMPLE_ATTEMPTS", ATTEMPTS // 2)
    _, first = await planted(engine, 11, _second_argument_is_full)
    assert first.discovery is not None
    assert first.discovery.overlap_sampled
    assert first.discovery.overlap_based_on_attempts == ATTEMPTS

    few = ATTEMPTS // 200  # half a percent
    await _more(engine, few, seed=1)
    reused = await compute_stats(engine, now=NOW)
    assert reused.discovery is not None
    assert reused.finished_attempts == ATTEMPTS + few
    assert reused.discovery.overlap_based_on_attempts == ATTEMPTS
    assert reused.discovery.overlap_attempts == first.discovery.overlap_attempts

    await _more(engine, few, seed=2)  # now 1 % more than when they were counted: counted again
    counted = await compute_stats(engine, now=NOW)
    assert counted.discovery is not None
    assert counted.discovery.overlap_based_on_attempts == counted.finished_attempts == ATTEMPTS + 2 * few
