"""A finding of /stats: a group of finished attempts (a pattern, a value, a recent window) against the others."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from service.stats.statistics import Interval, ProportionTest, newcombe_difference_interval, wilson_interval

FALSE_DISCOVERY_RATE = 0.05
"""`significant` means: still below this after one Benjamini-Hochberg correction over every hypothesis tested."""
FINDINGS_LIMIT = 30
"""Longest `findings` list: the strongest first (every hypothesis is tested and counted, whether listed or not)."""


class FindingKind(StrEnum):
    PATTERN = "pattern"
    """One of the registered patterns (service/stats/patterns.py)."""
    VALUE = "value"
    """One value of a dimension (an argument position, the name family, the node, ...) against every other value."""
    CHANGE = "change"
    """A program or name family in the recent window against the same program or family before it."""


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    kind: FindingKind
    description: str
    """The sentence shown as `pattern`: "Argument 2 is '--full'"."""
    match_count: int
    success_count: int
    others_count: int
    others_success_count: int
    overall_success_rate: float
    test: ProportionTest | None
    dimension: str | None = None
    value: Any = None
    condition: str | None = None
    """SQL over attempt_facts selecting the group's attempts (with `condition_value` bound), for the overlaps."""
    condition_value: str | None = None
    adjusted_p_value: float | None = None
    same_attempts: tuple[str, ...] = ()
    """Descriptions of other findings that select the same attempts (or, marked so, exactly the others)."""
    explained_by: str | None = None
    """The stronger finding within whose strata this one's effect vanishes."""
    stratified_p_value: float | None = None
    """The Cochran-Mantel-Haenszel p-value within the strata of the finding it was checked against."""

    @property
    def success_rate(self) -> float:
        return self.success_count / self.match_count if self.match_count else 0.0

    @property
    def success_rate_others(self) -> float | None:
        return self.others_success_count / self.others_count if self.others_count else None

    @property
    def interval(self) -> Interval | None:
        return wilson_interval(self.success_count, self.match_count)

    @property
    def difference_interval(self) -> Interval | None:
        """Newcombe's 95 % interval of successRate - successRateOthers."""
        return newcombe_difference_interval(
            self.success_count, self.match_count, self.others_success_count, self.others_count
        )

    @property
    def difference(self) -> float:
        return self.success_rate - (self.success_rate_others or 0.0)

    @property
    def strength(self) -> float:
        """How far from zero the difference surely is: the end of its interval nearest zero (0 if it spans zero)."""
        interval = self.difference_interval
        if interval is None:
            return 0.0
        return max(interval.low, -interval.high, 0.0)

    @property
    def rejected(self) -> bool:
        """The hypothesis of no difference is rejected at the false-discovery rate, explained or not."""
        return self.adjusted_p_value is not None and self.adjusted_p_value <= FALSE_DISCOVERY_RATE

    @property
    def significant(self) -> bool:
        """Rejected, and not explained by a stronger finding."""
        return self.rejected and self.explained_by is None


@dataclass(frozen=True, slots=True)
class Discovery:
    findings: list[Finding]
    """Strongest first, merged groups once each; at most FINDINGS_LIMIT."""
    summary: list[str]
    hypotheses_tested: int
    recent: timedelta
    recent_since: datetime
    overlap_attempts: int
    """Finished attempts the overlaps were counted over (all of them, or a sample)."""
    overlap_sampled: bool
    overlap_based_on_attempts: int
    """Finished attempts there were when the overlaps were counted (a sample's counts are reused a while)."""
    value_attempts: int
    """Finished attempts the value findings were counted over: all of them, or a sample of a large window's."""
    value_sampled: bool
