"""The lease timeline: a node's programs are ended before another node may declare it dead, with margin to spare."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.domain.lease import KEEPER_LEASE_CHECK_SECONDS, MIN_LEASE_SECONDS, LeaseTimeline
from service.settings import Settings


@pytest.mark.parametrize("lease_seconds", [MIN_LEASE_SECONDS, 30.0, 3600.0])
def test_programs_end_before_anyone_may_rerun_them(lease_seconds: float) -> None:
    timeline = LeaseTimeline(lease_seconds)
    assert timeline.heartbeat_interval_seconds < timeline.fence_after_seconds < lease_seconds
    assert timeline.rescue_after_seconds > lease_seconds
    # Between the keepers' kill and the earliest rerun: twice the margin, more than the keepers' check period.
    assert timeline.rescue_after_seconds - timeline.fence_after_seconds == pytest.approx(2 * timeline.margin_seconds)
    assert timeline.margin_seconds > KEEPER_LEASE_CHECK_SECONDS


def test_the_default_timeline_is_the_documented_one() -> None:
    timeline = LeaseTimeline(30.0)
    assert (timeline.heartbeat_interval_seconds, timeline.fence_after_seconds, timeline.rescue_after_seconds) == (
        10.0,
        25.0,
        35.0,
    )


def test_a_lease_too_short_for_the_keepers_is_refused() -> None:
    with pytest.raises(ValueError, match="the shortest is 3 s"):
        LeaseTimeline(2.0)
    with pytest.raises(ValidationError, match="use 0 \\(no lease\\) or 3 to 3600 seconds"):
        Settings(_env_file=None, node_lease_seconds=1)
    assert Settings(_env_file=None, node_lease_seconds=0).node_lease_seconds == 0
