"""Kept overlap counts are renumbered to the order the findings are chosen in now."""

from __future__ import annotations

from service.stats.overlap import _renumbered

KEPT_ORDER = ["a", "b", "c"]
# mask -> (attempts, successes), bit 0 = a, bit 1 = b, bit 2 = c.
KEPT = [[0b000, 10, 5], [0b001, 4, 1], [0b011, 3, 3], [0b110, 2, 0], [0b101, 7, 6]]


def test_each_combination_keeps_its_counts_under_the_new_bits() -> None:
    renumbered = _renumbered(KEPT, KEPT_ORDER, ["c", "a", "b"])  # now bit 0 = c, bit 1 = a, bit 2 = b
    assert renumbered.masks == {0b000: (10, 5), 0b010: (4, 1), 0b110: (3, 3), 0b101: (2, 0), 0b011: (7, 6)}
    # In a, whichever bit it has: the same attempts.
    assert renumbered.count(0b010) == (4 + 3 + 7, 1 + 3 + 6)
    assert renumbered.attempts == sum(total for _, total, _ in KEPT)


def test_the_same_order_changes_nothing() -> None:
    assert _renumbered(KEPT, KEPT_ORDER, KEPT_ORDER).masks == {mask: (t, s) for mask, t, s in KEPT}
