"""Which finding explains the others: findings that select the same attempts become one, and a finding whose effect
vanishes within the strata of a stronger one is marked as explained by it.

The counts are those of one GROUP BY over a bitmask (service/stats/discovery_sql.py: overlap_sql): bit i set when
the attempt belongs to candidate i, so any intersection of candidates is a sum of a few rows. A sample's counts for
the rollup are kept in `stats_rollup_overlaps` and reused while the candidates stay the same and the finished
attempts have grown by less than OVERLAP_REUSE_GROWTH.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.stats.discovery import rank
from service.stats.discovery_sql import ALL_PROGRAMS, overlap_sql, value_condition
from service.stats.filters import StatsFilters
from service.stats.findings import Finding, FindingKind
from service.stats.statistics import Stratum, mantel_haenszel_p

PREFIX_SCOPE = "namePrefix:"
"""The `scope` of a name prefix's kept overlaps: this and the prefix (a program, an absolute path, never starts so)."""
OVERLAP_CANDIDATES = 16
"""The strongest rejected findings (changes aside) whose overlaps are counted: one bit each."""
SAME_ATTEMPTS_JACCARD = 0.95
"""Two findings whose attempts share at least this Jaccard index (intersection over union) are one finding."""
EXPLAINED_ABOVE_P = 0.05
"""Within a stronger finding's strata, a stratified p-value above this means the effect vanished."""
OVERLAP_EXACT_MAX_ATTEMPTS = 20_000
"""Up to this many finished attempts the overlaps are counted over all of them; beyond, over a sample."""
OVERLAP_SAMPLE_ATTEMPTS = 2_500
"""The sample's expected size (the same attempts while the table is unchanged)."""
LOOKUP_COST_IN_SCANNED_ATTEMPTS = 4
"""A page sample looks attempts up one by one whatever the filter, about as costly each as reading this many
attempts in a scan: it is drawn when its lookups cost less than reading the filtered attempts once; else those are
read and thinned by a hash of their id."""
OVERLAP_REUSE_GROWTH = 0.01
"""The rollup's sampled overlap counts are reused until the finished attempts have grown by this share."""

# The planner's estimate is enough to choose how to sample (0 before the first ANALYZE: a page sample then).
_TABLE_ATTEMPTS = text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'attempts'::regclass")
_READ_KEPT = text("SELECT candidates, finished_attempts, masks FROM stats_rollup_overlaps WHERE scope = :scope")
_KEEP = text("""
    INSERT INTO stats_rollup_overlaps (scope, candidates, finished_attempts, masks)
    VALUES (:scope, CAST(:candidates AS jsonb), :finished_attempts, CAST(:masks AS jsonb))
    ON CONFLICT (scope) DO UPDATE
    SET candidates = excluded.candidates, finished_attempts = excluded.finished_attempts, masks = excluded.masks
""")


@dataclass(frozen=True, slots=True)
class OverlapCounts:
    masks: dict[int, tuple[int, int]]
    """mask -> (attempts, successes)."""

    @property
    def attempts(self) -> int:
        return sum(total for total, _ in self.masks.values())

    def count(self, include: int, exclude: int = 0) -> tuple[int, int]:
        """Attempts (and successes) in every candidate of bitmask `include` and in none of `exclude`."""
        total = successes = 0
        for mask, (attempts, ok) in self.masks.items():
            if mask & include == include and not mask & exclude:
                total += attempts
                successes += ok
        return total, successes

    def jaccard(self, a: int, b: int, *, complement_of_b: bool = False) -> float:
        """Attempts in both over attempts in either, for candidates a and b (or a and everything outside b)."""
        bit_a, bit_b = 1 << a, 1 << b
        size_a, _ = self.count(bit_a)
        if complement_of_b:
            both, _ = self.count(bit_a, exclude=bit_b)
            size_b, _ = self.count(0, exclude=bit_b)
        else:
            both, _ = self.count(bit_a | bit_b)
            size_b, _ = self.count(bit_b)
        union = size_a + size_b - both
        return both / union if union else 0.0

    def within_strata_of(self, tested: int, stronger: int) -> float:
        """CMH p-value of candidate `tested` against the rest, within the attempts in and out of `stronger`."""
        bit_t, bit_s = 1 << tested, 1 << stronger
        strata = []
        for inside, outside in ((bit_s, 0), (0, bit_s)):
            in_group = self.count(bit_t | inside, exclude=outside)
            out_group = self.count(inside, exclude=bit_t | outside)
            strata.append(Stratum(in_group[0], in_group[1], out_group[0], out_group[1]))
        return mantel_haenszel_p(strata)


def candidates(ranked: Sequence[Finding]) -> list[Finding]:
    return [f for f in ranked if f.rejected and f.kind is not FindingKind.CHANGE][:OVERLAP_CANDIDATES]


def sample_share(finished_attempts: int) -> float | None:
    if finished_attempts <= OVERLAP_EXACT_MAX_ATTEMPTS:
        return None
    return OVERLAP_SAMPLE_ATTEMPTS / finished_attempts


def _condition(finding: Finding, parameter: str) -> tuple[str, dict[str, object]]:
    if finding.kind is FindingKind.VALUE and finding.dimension is not None:
        return value_condition(finding.dimension, parameter), {parameter: finding.condition_value}
    if finding.condition is None:
        raise ValueError(f"finding {finding.id} has no condition")
    return finding.condition, {}


async def count_overlaps(
    connection: AsyncConnection,
    chosen: Sequence[Finding],
    filters: StatsFilters,
    finished_attempts: int,
) -> OverlapCounts:
    """One statement: attempts and successes per combination of the chosen findings."""
    if not chosen:
        return OverlapCounts({})
    conditions, bound = [], {}
    for index, finding in enumerate(chosen):
        condition, parameters = _condition(finding, f"candidate_{index}")
        conditions.append(condition)
        bound.update(parameters)
    share = sample_share(finished_attempts)
    pages = True
    if share is not None and filters.needs_scan:
        table_attempts = (await connection.execute(_TABLE_ATTEMPTS)).scalar_one()
        pages = table_attempts * share * LOOKUP_COST_IN_SCANNED_ATTEMPTS <= finished_attempts
    sql, parameters = overlap_sql(conditions, filters, sample_share=share, sample_pages=pages)
    rows = (await connection.execute(text(sql), {**parameters, **bound})).all()
    return OverlapCounts({int(row.mask): (int(row.total), int(row.successes)) for row in rows})


def _renumbered(masks: list[list[int]], kept_order: list[str], order: list[str]) -> OverlapCounts:
    """Kept counts whose bit j was candidate kept_order[j], with the bits of `order` instead."""
    bit_of = {finding_id: 1 << order.index(finding_id) for finding_id in kept_order}
    renumbered: dict[int, tuple[int, int]] = {}
    for mask, total, successes in masks:
        new_mask = sum(bit_of[finding_id] for j, finding_id in enumerate(kept_order) if mask & (1 << j))
        renumbered[new_mask] = (total, successes)
    return OverlapCounts(renumbered)


async def rollup_overlaps(
    connection: AsyncConnection, chosen: Sequence[Finding], filters: StatsFilters, finished_attempts: int
) -> tuple[OverlapCounts, int]:
    """The overlaps of a rollup request, and how many finished attempts there were when they were counted: a sample's
    counts are reused while the same candidates are chosen and the attempts grew by less than OVERLAP_REUSE_GROWTH
    (a few more attempts barely move a sample of OVERLAP_SAMPLE_ATTEMPTS, and counting it costs more than the rest
    of the request). `filters` is a program, a name prefix, or nothing."""
    if not chosen or sample_share(finished_attempts) is None:
        return await count_overlaps(connection, chosen, filters, finished_attempts), finished_attempts
    if filters.name_prefix is not None:
        scope = PREFIX_SCOPE + filters.name_prefix
    else:
        scope = ALL_PROGRAMS if filters.program is None else filters.program
    order = [finding.id for finding in chosen]
    kept = (await connection.execute(_READ_KEPT, {"scope": scope})).one_or_none()
    if (
        kept is not None
        and sorted(kept.candidates) == sorted(order)
        and kept.finished_attempts <= finished_attempts < kept.finished_attempts * (1 + OVERLAP_REUSE_GROWTH)
    ):
        return _renumbered(kept.masks, kept.candidates, order), int(kept.finished_attempts)
    counts = await count_overlaps(connection, chosen, filters, finished_attempts)
    masks = [[mask, total, successes] for mask, (total, successes) in counts.masks.items()]
    await connection.execute(
        _KEEP,
        {
            "scope": scope,
            "candidates": json.dumps(order),
            "finished_attempts": finished_attempts,
            "masks": json.dumps(masks),
        },
    )
    return counts, finished_attempts


def resolve(ranked: Sequence[Finding], chosen: Sequence[Finding], overlaps: OverlapCounts) -> list[Finding]:
    """Merge the chosen findings that select the same attempts, mark those another explains, and rank again."""
    leaders: list[int] = []
    same: dict[int, list[str]] = {}
    absorbed: set[str] = set()
    for index, finding in enumerate(chosen):
        for leader in leaders:
            if overlaps.jaccard(leader, index) >= SAME_ATTEMPTS_JACCARD:
                same[leader].append(finding.description)
                break
            if overlaps.jaccard(leader, index, complement_of_b=True) >= SAME_ATTEMPTS_JACCARD:
                same[leader].append(f"{finding.description} (selects the others)")
                break
        else:
            leaders.append(index)
            same[index] = []
            continue
        absorbed.add(finding.id)
    resolved: dict[str, Finding] = {}
    explained: set[int] = set()
    for position, tested in enumerate(leaders):
        stratified: float | None = None
        explained_by: str | None = None
        for stronger in leaders[:position]:
            if stronger in explained:
                continue
            p_value = overlaps.within_strata_of(tested, stronger)
            stratified = p_value if stratified is None else max(stratified, p_value)
            if p_value > EXPLAINED_ABOVE_P:
                explained_by, stratified = chosen[stronger].description, p_value
                explained.add(tested)
                break
        finding = chosen[tested]
        resolved[finding.id] = dataclasses.replace(
            finding, same_attempts=tuple(same[tested]), explained_by=explained_by, stratified_p_value=stratified
        )
    return rank(resolved.get(f.id, f) for f in ranked if f.id not in absorbed)
