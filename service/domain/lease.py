"""A node's lease and the timeline derived from it: when it renews, when its programs fence themselves, and when
another node may declare it dead. One place for the arithmetic that docs/operations.md ("Nodes") describes."""

from __future__ import annotations

from dataclasses import dataclass

# The service renews its lease this many times per lease period: one slow or lost heartbeat costs nothing.
HEARTBEATS_PER_LEASE = 3
# Each side keeps this share of the lease as a safety margin: a node's programs are ended `margin` before its lease
# runs out, and others wait `margin` past it. It covers the keepers' check period and clock skew between machines.
LEASE_MARGIN_FRACTION = 1 / 6
# The exit keeper looks at its lease file this often (exit_keeper.c, LEASE_CHECK_MS): the margin must be longer.
KEEPER_LEASE_CHECK_SECONDS = 0.25
# Below this the margin would not cover the keeper's check period (and heartbeats would be too frequent).
MIN_LEASE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class LeaseTimeline:
    """Times measured from the start of a node's last successful heartbeat (its renewal)."""

    lease_seconds: float

    def __post_init__(self) -> None:
        if self.lease_seconds < MIN_LEASE_SECONDS:
            raise ValueError(f"a lease is {self.lease_seconds:g} s; the shortest is {MIN_LEASE_SECONDS:g} s")

    @property
    def margin_seconds(self) -> float:
        return self.lease_seconds * LEASE_MARGIN_FRACTION

    @property
    def heartbeat_interval_seconds(self) -> float:
        return self.lease_seconds / HEARTBEATS_PER_LEASE

    @property
    def fence_after_seconds(self) -> float:
        """The node's exit keepers end their programs this long after the last renewal: lease - margin."""
        return self.lease_seconds - self.margin_seconds

    @property
    def rescue_after_seconds(self) -> float:
        """Another node may declare this one dead this long after the last renewal: lease + margin."""
        return self.lease_seconds + self.margin_seconds

    @property
    def rescue_check_interval_seconds(self) -> float:
        """How often a live node looks for nodes whose lease ran out."""
        return self.margin_seconds
