"""The statistics behind /stats, in plain Python: Wilson intervals, two-proportion and Fisher tests, Benjamini-Hochberg.

Everything here works on counts that SQL has already aggregated; no row of history ever reaches Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

Z_95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95 % interval."""
FISHER_BELOW_EXPECTED_COUNT = 5.0
"""Use Fisher's exact test when any expected cell of the 2x2 table is below this (the usual rule of thumb)."""
# R's fisher.test treats probabilities within this relative distance of the observed one as equal (ties).
_FISHER_RELATIVE_TOLERANCE = 1e-7


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """The Wilson score interval for a success rate; None when there are no trials (there is no rate)."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes is {successes}; it must be between 0 and trials ({trials})")
    rate = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (rate + z2 / (2 * trials)) / denominator
    half_width = z / denominator * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials))
    # Clamped: at 0/n and n/n the formula gives the bound itself, up to rounding.
    return Interval(low=max(0.0, centre - half_width), high=min(1.0, centre + half_width))


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


def two_proportion_z(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float | None:
    """The pooled two-proportion z statistic of group a against group b; None when it is undefined.

    Undefined when a group is empty, or when every attempt of both groups ended the same way (no variance).
    """
    if trials_a <= 0 or trials_b <= 0:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        return None
    return (successes_a / trials_a - successes_b / trials_b) / math.sqrt(variance)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test for the 2x2 table [[a, b], [c, d]].

    The sum of the hypergeometric probabilities of every table with the same margins that is no more likely than the
    observed one (the definition R's fisher.test uses).
    """
    if min(a, b, c, d) < 0:
        raise ValueError(f"a 2x2 table holds counts, not negative numbers: {[[a, b], [c, d]]}")
    row_1, row_2, column_1 = a + b, c + d, a + c
    total = row_1 + row_2
    if total == 0:
        return 1.0
    log_denominator = _log_choose(total, column_1)

    def log_probability(x: int) -> float:
        return _log_choose(row_1, x) + _log_choose(row_2, column_1 - x) - log_denominator

    observed = log_probability(a)
    threshold = observed + math.log1p(_FISHER_RELATIVE_TOLERANCE)
    # Relative to the observed probability, so that tiny probabilities do not all underflow to zero.
    relative_sum = sum(
        math.exp(log_probability(x) - observed)
        for x in range(max(0, column_1 - row_2), min(row_1, column_1) + 1)
        if log_probability(x) <= threshold
    )
    return min(1.0, math.exp(observed) * relative_sum)


class ComparisonMethod(StrEnum):
    Z = "two-proportion z-test"
    FISHER = "Fisher's exact test"


@dataclass(frozen=True, slots=True)
class ProportionTest:
    method: ComparisonMethod
    p_value: float
    z: float | None
    """The pooled z statistic, also given when Fisher's test decided the p-value (it orders equal p-values)."""


def compare_proportions(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> ProportionTest | None:
    """Do groups a and b succeed equally often? None when one group is empty: there is nothing to compare.

    The pooled two-proportion z-test when every expected cell count is at least 5, else Fisher's exact test.
    """
    if trials_a <= 0 or trials_b <= 0:
        return None
    failures_a, failures_b = trials_a - successes_a, trials_b - successes_b
    total = trials_a + trials_b
    successes, failures = successes_a + successes_b, failures_a + failures_b
    smallest_expected = min(trials_a, trials_b) * min(successes, failures) / total
    z = two_proportion_z(successes_a, trials_a, successes_b, trials_b)
    if smallest_expected < FISHER_BELOW_EXPECTED_COUNT or z is None:
        return ProportionTest(
            ComparisonMethod.FISHER, fisher_exact_two_sided(successes_a, failures_a, successes_b, failures_b), z
        )
    return ProportionTest(ComparisonMethod.Z, normal_two_sided_p(z), z)


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given; None stays None (no test was made).

    A hypothesis is rejected at false-discovery rate q when its adjusted p-value is at most q.
    """
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    count = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running_minimum = 1.0
    for rank in range(count, 0, -1):
        p, index = tested[rank - 1]
        running_minimum = min(running_minimum, p * count / rank)
        adjusted[index] = running_minimum
    return adjusted


def newcombe_difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
) -> Interval | None:
    """Newcombe's hybrid score interval for rate a minus rate b (his method 10, built from two Wilson intervals).

    None when a group is empty. It stays inside [-1, 1] and behaves at rates of 0 and 1, unlike the Wald interval.
    """
    interval_a, interval_b = wilson_interval(successes_a, trials_a, z), wilson_interval(successes_b, trials_b, z)
    if interval_a is None or interval_b is None:
        return None
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    difference = rate_a - rate_b
    below = math.sqrt((rate_a - interval_a.low) ** 2 + (interval_b.high - rate_b) ** 2)
    above = math.sqrt((interval_a.high - rate_a) ** 2 + (rate_b - interval_b.low) ** 2)
    return Interval(low=max(-1.0, difference - below), high=min(1.0, difference + above))


@dataclass(frozen=True, slots=True)
class Stratum:
    """One stratum's 2x2 table: attempts in and out of the group being tested, and the successes of each."""

    in_group: int
    in_group_successes: int
    out_group: int
    out_group_successes: int


def mantel_haenszel_p(strata: Sequence[Stratum]) -> float:
    """Two-sided p-value of the Cochran-Mantel-Haenszel test (with continuity correction): does the group still go
    with success or failure once compared only with attempts of the same stratum?

    Strata in which the group or its complement is empty, or in which every attempt ended alike, carry no
    information; with none left the answer is 1.0 (no effect can be seen).
    """
    observed_minus_expected = 0.0
    variance = 0.0
    for stratum in strata:
        total = stratum.in_group + stratum.out_group
        successes = stratum.in_group_successes + stratum.out_group_successes
        failures = total - successes
        if total < 2 or not stratum.in_group or not stratum.out_group or not successes or not failures:
            continue
        observed_minus_expected += stratum.in_group_successes - stratum.in_group * successes / total
        variance += stratum.in_group * stratum.out_group * successes * failures / (total * total * (total - 1))
    if variance <= 0:
        return 1.0
    statistic = max(0.0, abs(observed_minus_expected) - 0.5) ** 2 / variance
    # The chi-square distribution with one degree of freedom: P(X >= s) = P(|Z| >= sqrt(s)).
    return normal_two_sided_p(math.sqrt(statistic))
