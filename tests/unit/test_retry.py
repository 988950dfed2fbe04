"""The retry policy: exponential bounds with a cap, and full jitter drawn within them."""

from __future__ import annotations

import random
import statistics

import pytest

from service.domain.retry import NO_WAIT, RetryPolicy

DRAWS = 2000


@pytest.mark.parametrize(
    ("attempt_number", "expected_bound"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (20, 10.0)]
)
def test_the_bound_doubles_with_each_attempt_up_to_the_cap(attempt_number: int, expected_bound: float) -> None:
    policy = RetryPolicy(base_seconds=0.5, cap_seconds=10.0)

    assert policy.bound_seconds(attempt_number) == expected_bound


def test_an_absurd_attempt_number_still_gives_the_cap() -> None:
    assert RetryPolicy(base_seconds=1.0, cap_seconds=300.0).bound_seconds(10_000) == 300.0


@pytest.mark.parametrize("attempt_number", [1, 3, 8])
def test_every_delay_lies_within_zero_and_the_bound_and_they_spread_over_it(attempt_number: int) -> None:
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=30.0)
    bound = policy.bound_seconds(attempt_number)
    rng = random.Random(attempt_number)

    delays = [policy.delay_seconds(attempt_number, rng) for _ in range(DRAWS)]

    assert all(0.0 <= delay <= bound for delay in delays)
    # Full jitter: uniform over [0, bound], so the draws reach both ends and centre on the middle.
    assert min(delays) < bound * 0.05
    assert max(delays) > bound * 0.95
    assert statistics.fmean(delays) == pytest.approx(bound / 2, rel=0.1)


def test_two_jobs_failing_together_do_not_come_back_together() -> None:
    policy = RetryPolicy(base_seconds=4.0, cap_seconds=60.0)

    delays = {policy.delay_seconds(1) for _ in range(50)}

    assert len(delays) == 50


def test_no_wait_retries_at_once() -> None:
    assert NO_WAIT.delay_seconds(5) == 0.0


@pytest.mark.parametrize(("base", "cap"), [(-1.0, 10.0), (1.0, -0.5)])
def test_negative_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        RetryPolicy(base_seconds=base, cap_seconds=cap)


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        RetryPolicy(base_seconds=1.0, cap_seconds=2.0).bound_seconds(0)
