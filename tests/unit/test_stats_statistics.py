"""The statistics of /stats against values worked out by hand or printed in textbooks."""

from __future__ import annotations

import math

import pytest

from service.stats.statistics import (
    ComparisonMethod,
    Stratum,
    benjamini_hochberg,
    compare_proportions,
    fisher_exact_two_sided,
    mantel_haenszel_p,
    newcombe_difference_interval,
    normal_two_sided_p,
    two_proportion_z,
    wilson_interval,
)


def test_wilson_interval_of_8_out_of_10() -> None:
    # p = 0.8, n = 10, z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71687; half-width
    # 1.96 / 1.38415 * sqrt(0.016 + 0.0096040) = 1.41603 * 0.16001 = 0.22658. The textbook interval is 0.490-0.943.
    interval = wilson_interval(8, 10)
    assert interval is not None
    assert interval.low == pytest.approx(0.49016, abs=1e-5)
    assert interval.high == pytest.approx(0.94332, abs=1e-5)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # 0/10: centre = half-width = 0.19208 / 1.38415 = 0.13877, so the interval is [0, 0.27754].
        (0, 10, 0.0, 0.27754),
        (10, 10, 0.72246, 1.0),
        # 1/1: centre (1 + 1.92073) / 4.84146 = 0.60330, half-width 1.96 / 4.84146 * sqrt(0.96036) = 0.39672.
        (1, 1, 0.20654, 1.0),
    ],
)
def test_wilson_interval_at_the_edges(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, trials)
    assert interval is not None
    assert interval.low == pytest.approx(low, abs=1e-5)
    assert interval.high == pytest.approx(high, abs=1e-5)


def test_wilson_interval_without_trials_is_none() -> None:
    assert wilson_interval(0, 0) is None


def test_wilson_interval_refuses_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes is 11"):
        wilson_interval(11, 10)


def test_two_proportion_z_by_hand() -> None:
    # 45/100 against 60/100: pooled 0.525, variance 0.525 * 0.475 * (1/100 + 1/100) = 0.0049875,
    # z = -0.15 / 0.070622 = -2.12398; two-sided p = erfc(2.12398 / sqrt 2) = 0.03367.
    z = two_proportion_z(45, 100, 60, 100)
    assert z is not None
    assert z == pytest.approx(-2.12398, abs=1e-5)
    assert normal_two_sided_p(z) == pytest.approx(0.033670, abs=1e-5)


def test_two_proportion_z_is_undefined_without_variance_or_a_group() -> None:
    assert two_proportion_z(5, 5, 7, 7) is None  # everything succeeded
    assert two_proportion_z(0, 0, 3, 7) is None


@pytest.mark.parametrize(
    ("table", "p_value"),
    [
        # The lady tasting tea: 3 of 4 cups right. P(3) = C(4,3)C(4,1)/C(8,4) = 16/70; the tables as likely or less
        # likely are 1, 3 (16/70 each), 0 and 4 (1/70 each): 34/70.
        ((3, 1, 1, 3), 34 / 70),
        # A textbook example (dieting by sex): [[1, 9], [11, 3]] gives a two-sided p of 0.002759.
        ((1, 9, 11, 3), 0.0027595),
        # Perfectly separated 5 vs 5: only the two extreme tables, each 1 / C(10, 5) = 1/252.
        ((5, 0, 0, 5), 2 / 252),
        # An empty row leaves one possible table.
        ((0, 0, 3, 4), 1.0),
    ],
)
def test_fisher_exact_two_sided(table: tuple[int, int, int, int], p_value: float) -> None:
    assert fisher_exact_two_sided(*table) == pytest.approx(p_value, rel=1e-4)


def test_fisher_exact_does_not_underflow_on_large_separated_tables() -> None:
    # 1 / C(2000, 1000) is far below the smallest float, but the sum is computed relative to the observed table.
    p_value = fisher_exact_two_sided(1000, 0, 0, 1000)
    assert 0.0 <= p_value < 1e-300
    assert fisher_exact_two_sided(600, 400, 400, 600) < 1e-15


def test_compare_proportions_uses_fisher_for_small_expected_counts() -> None:
    # Expected successes among 4 matching attempts: 4 * 5 / 13 = 1.5 < 5.
    small = compare_proportions(1, 4, 4, 9)
    assert small is not None
    assert small.method is ComparisonMethod.FISHER
    assert small.p_value == pytest.approx(fisher_exact_two_sided(1, 3, 4, 5))

    large = compare_proportions(45, 100, 60, 100)
    assert large is not None
    assert large.method is ComparisonMethod.Z
    assert large.p_value == pytest.approx(0.033670, abs=1e-5)


def test_compare_proportions_without_a_group_to_compare_with() -> None:
    assert compare_proportions(0, 0, 5, 10) is None
    assert compare_proportions(5, 10, 0, 0) is None


def test_benjamini_hochberg_by_hand() -> None:
    # Sorted: 0.005 (rank 1), 0.01 (2), 0.03 (3), 0.04 (4), 0.049 (5), 0.2 (6), 0.5 (7); m = 7.
    # p * m / rank: 0.035, 0.035, 0.07, 0.07, 0.0686, 0.23333, 0.5; then the running minimum from the top:
    # 0.035, 0.035, 0.0686, 0.0686, 0.0686, 0.23333, 0.5.
    p_values = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5, 0.049]
    adjusted = benjamini_hochberg(p_values)
    expected = [0.035, 0.0686, 0.0686, 0.035, 0.233333, 0.5, 0.0686]
    assert adjusted == [pytest.approx(value, abs=1e-6) for value in expected]


def test_benjamini_hochberg_skips_untested_hypotheses() -> None:
    # Two tests only (m = 2): 0.02 * 2 / 1 = 0.04, and 0.04 * 2 / 2 = 0.04.
    assert benjamini_hochberg([None, 0.04, 0.02, None]) == [None, pytest.approx(0.04), pytest.approx(0.04), None]
    assert benjamini_hochberg([]) == []


def test_normal_two_sided_p_known_points() -> None:
    assert normal_two_sided_p(1.959963984540054) == pytest.approx(0.05, abs=1e-12)
    assert normal_two_sided_p(0.0) == 1.0
    assert normal_two_sided_p(-2.5758293035489) == pytest.approx(0.01, abs=1e-12)
    assert math.isclose(normal_two_sided_p(40.0), 0.0, abs_tol=1e-300)


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), example (a): 56/70 against 48/80, method 10 gives 0.0524 to 0.3339.
    interval = newcombe_difference_interval(56, 70, 48, 80)
    assert interval is not None
    assert interval.low == pytest.approx(0.0524, abs=1e-4)
    assert interval.high == pytest.approx(0.3339, abs=1e-4)


def test_newcombe_interval_is_none_without_a_group() -> None:
    assert newcombe_difference_interval(0, 0, 3, 5) is None


def test_mantel_haenszel_sees_no_effect_that_is_the_same_in_both_groups() -> None:
    # In each stratum the group succeeds exactly as often as the rest: nothing left to explain.
    balanced = [Stratum(10, 5, 30, 15), Stratum(20, 18, 20, 18)]
    assert mantel_haenszel_p(balanced) == pytest.approx(1.0)
    # A stratum without the group, or where every attempt ended alike, carries no information.
    assert mantel_haenszel_p([Stratum(0, 0, 50, 20), Stratum(10, 10, 10, 10)]) == 1.0


def test_mantel_haenszel_of_one_stratum_is_the_hand_computed_statistic() -> None:
    # 40 in the group with 10 successes, 60 others with 45: E = 40 * 55 / 100 = 22, V = 40*60*55*45 / (100^2 * 99).
    variance = 40 * 60 * 55 * 45 / (100 * 100 * 99)
    statistic = (abs(10 - 22) - 0.5) ** 2 / variance
    expected = math.erfc(math.sqrt(statistic) / math.sqrt(2))
    assert mantel_haenszel_p([Stratum(40, 10, 60, 45)]) == pytest.approx(expected, rel=1e-12)
